"""Lambda code bundled on the synth machine, no Docker: common/ + functions/ + their pip dependencies.

The dependencies are the project's `lambda` extra (pyproject.toml), installed for the Lambda platform
(manylinux x86_64, the runtime's CPython), binary wheels only, so Pillow's compiled parts match Amazon
Linux 2023 whatever machine runs synth. boto3 (the base dependency) comes with the runtime and Powertools
from its public layer, so neither is bundled.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, IgnoreMode, ILocalBundling
from aws_cdk import aws_lambda as lambda_
from packaging.utils import canonicalize_name

from infra.config import REPO_ROOT
from infra.dependencies import extra_requirements

LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_PYTHON_VERSION = "3.14"
# Lambda's Amazon Linux 2023 has glibc 2.34: wheels for manylinux 2.28 and older all run there.
# pip matches --platform tags literally, so the older spellings are listed too (rpds-py ships 2014 only).
PIP_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
CODE_PACKAGES = ("common", "functions")
LAMBDA_EXTRA = "lambda"
# Packages of the `lambda` extra that the function gets from elsewhere, and from where.
PROVIDED_BY_LAMBDA = {"aws-lambda-powertools": "the Powertools public layer (infra/constructs/lambdas.py)"}

# Fingerprint and copy only the packages the Lambdas import; everything else in the repo is ignored,
# so synth never walks .venv/ or node_modules/.
ASSET_EXCLUDES = [
    "*",
    *(f"!{package}" for package in CODE_PACKAGES),
    *(f"!{package}/**" for package in CODE_PACKAGES),
    "**/__pycache__",
    "**/*.pyc",
    "**/tests",
]


def bundle_requirements(*, source: Path = REPO_ROOT) -> list[str]:
    """What the bundle pip-installs: the `lambda` extra of the project's metadata, less what Lambda provides."""
    found = extra_requirements(LAMBDA_EXTRA, pyproject=source / "pyproject.toml")
    return [str(r) for r in found if canonicalize_name(r.name) not in PROVIDED_BY_LAMBDA]


def pip_install_command(requirements: Sequence[str], target: Path) -> list[str]:
    """pip arguments that fetch Lambda-platform wheels (never builds from source)."""
    return [
        sys.executable, "-m", "pip", "install",
        *requirements,
        "--target", str(target),
        *(arg for platform in PIP_PLATFORMS for arg in ("--platform", platform)),
        "--implementation", "cp",
        "--python-version", LAMBDA_PYTHON_VERSION,
        "--only-binary=:all:",
        "--no-compile",  # .pyc of the synth machine's Python would be useless on the runtime's
        "--quiet",
        "--disable-pip-version-check",
    ]


@jsii.implements(ILocalBundling)
class LocalPythonBundling:
    """Copies the code packages and pip-installs the bundle's requirements into the asset's output folder."""

    def __init__(self, *, source: Path = REPO_ROOT) -> None:
        self._source = source

    def try_bundle(self, output_dir: str, options: BundlingOptions | None = None) -> bool:
        out = Path(output_dir)
        for package in CODE_PACKAGES:
            shutil.copytree(self._source / package, out / package, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
        requirements = bundle_requirements(source=self._source)
        result = subprocess.run(pip_install_command(requirements, out), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pip could not install the Lambda dependencies {requirements} (pyproject.toml extra "
                               f"[{LAMBDA_EXTRA}]) for {PIP_PLATFORMS[0]} / CPython {LAMBDA_PYTHON_VERSION}:\n"
                               f"{result.stderr[-3000:]}")
        return True


def docker_bundling_command(*, source: Path = REPO_ROOT) -> str:
    """The same bundle built in the SAM build image (where local bundling is impossible).

    The requirements are spelled out in the command, which is part of the asset hash: a change to the
    `lambda` extra makes a new asset even though pyproject.toml itself is not fingerprinted.
    """
    return ("cp -r " + " ".join(f"/asset-input/{p}" for p in CODE_PACKAGES) + " /asset-output/ && "
            f"pip install {shlex.join(bundle_requirements(source=source))} -t /asset-output --no-compile")


def lambda_code(*, source: Path = REPO_ROOT) -> lambda_.Code:
    """The one code asset shared by the intake and notifier Lambdas (bundled once per synth)."""
    return lambda_.Code.from_asset(
        str(source),
        exclude=ASSET_EXCLUDES,
        ignore_mode=IgnoreMode.GLOB,
        asset_hash_type=AssetHashType.SOURCE,  # stable across machines; bundling options are hashed too
        bundling=BundlingOptions(
            # Only used where local bundling is impossible; synth normally never touches Docker.
            image=DockerImage.from_registry(f"public.ecr.aws/sam/build-python{LAMBDA_PYTHON_VERSION}"),
            command=["bash", "-c", docker_bundling_command(source=source)],
            # jsii hands try_bundle the options struct whole, not as the keywords its Protocol stub lists.
            local=cast(ILocalBundling, LocalPythonBundling(source=source)),
        ),
    )
