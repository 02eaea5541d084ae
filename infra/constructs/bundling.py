"""Lambda code bundled on the synth machine, no Docker: common/ + functions/ + their pip dependencies.

The dependencies are the project's `lambda` extra as the lock pins it (requirements/lambda.txt, exported
from uv.lock with hashes: infra/lock.py), installed with `--require-hashes --no-deps` for the Lambda
platform (manylinux x86_64, the runtime's CPython), binary wheels only, so Pillow's compiled parts match
Amazon Linux 2023 whatever machine runs synth. boto3 (the base dependency) comes with the runtime and
Powertools from its public layer, so neither is bundled. The requirements file is part of the asset's
source fingerprint: a new pin is a new asset, even though the code did not change.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import cast

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, IgnoreMode, ILocalBundling
from aws_cdk import aws_lambda as lambda_
from packaging.requirements import Requirement

from infra.config import REPO_ROOT
from infra.lock import requirements_file

LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_PYTHON_VERSION = "3.14"
# Lambda's Amazon Linux 2023 has glibc 2.34: wheels for manylinux 2.28 and older all run there.
# pip matches --platform tags literally, so the older spellings are listed too (rpds-py ships 2014 only).
PIP_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
CODE_PACKAGES = ("common", "functions")
LAMBDA_TARGET = "lambda"  # infra/lock.py's target: the `lambda` extra less what Lambda provides
LAMBDA_REQUIREMENTS = requirements_file(LAMBDA_TARGET).relative_to(REPO_ROOT).as_posix()

# Fingerprint the packages the Lambdas import and the pinned requirements; everything else in the repo is
# ignored, so synth never walks .venv/ or node_modules/.
ASSET_EXCLUDES = [
    "*",
    *(f"!{package}" for package in CODE_PACKAGES),
    *(f"!{package}/**" for package in CODE_PACKAGES),
    f"!{LAMBDA_REQUIREMENTS.split('/')[0]}",
    f"!{LAMBDA_REQUIREMENTS}",
    "**/__pycache__",
    "**/*.pyc",
    "**/tests",
]


def bundle_requirements(*, source: Path = REPO_ROOT) -> list[str]:
    """What the bundle pip-installs, `name==version` each: the pins of requirements/lambda.txt."""
    lines = (source / LAMBDA_REQUIREMENTS).read_text().replace("\\\n", " ").splitlines()
    pins = [line.split("--hash", 1)[0].strip() for line in map(str.strip, lines) if line and not line.startswith("#")]
    return [str(Requirement(pin)) for pin in pins]


def pip_install_command(requirements_path: Path, target: Path) -> list[str]:
    """pip arguments that install exactly the locked, hashed Lambda-platform wheels (never builds from source)."""
    return [
        sys.executable, "-m", "pip", "install",
        "--require-hashes", "--no-deps", "-r", str(requirements_path),
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
        requirements = self._source / LAMBDA_REQUIREMENTS
        result = subprocess.run(pip_install_command(requirements, out), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pip could not install the Lambda dependencies of {LAMBDA_REQUIREMENTS} (`make lock` "
                               f"writes it) for {PIP_PLATFORMS[0]} / CPython {LAMBDA_PYTHON_VERSION}:\n"
                               f"{result.stderr[-3000:]}")
        return True


def docker_bundling_command() -> str:
    """The same bundle built in the SAM build image (where local bundling is impossible), from the same file."""
    return ("cp -r " + " ".join(f"/asset-input/{p}" for p in CODE_PACKAGES) + " /asset-output/ && "
            f"pip install --require-hashes --no-deps -r /asset-input/{LAMBDA_REQUIREMENTS} -t /asset-output "
            "--no-compile")


def lambda_code(*, source: Path = REPO_ROOT) -> lambda_.Code:
    """The one code asset shared by the intake and notifier Lambdas (bundled once per synth)."""
    return lambda_.Code.from_asset(
        str(source),
        exclude=ASSET_EXCLUDES,
        ignore_mode=IgnoreMode.GLOB,
        # The fingerprint of the code packages and requirements/lambda.txt (what pip resolved, pinned by
        # hash): stable across machines, and new whenever a pin changes. Bundling options are hashed too.
        asset_hash_type=AssetHashType.SOURCE,
        bundling=BundlingOptions(
            # Only used where local bundling is impossible; synth normally never touches Docker.
            image=DockerImage.from_registry(f"public.ecr.aws/sam/build-python{LAMBDA_PYTHON_VERSION}"),
            command=["bash", "-c", docker_bundling_command()],
            # jsii hands try_bundle the options struct whole, not as the keywords its Protocol stub lists.
            local=cast(ILocalBundling, LocalPythonBundling(source=source)),
        ),
    )
