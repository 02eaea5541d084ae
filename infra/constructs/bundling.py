"""Lambda code bundled on the synth machine, no Docker: common/ + functions/ + their pip dependencies.

The dependencies are installed for the Lambda platform (manylinux x86_64, the runtime's CPython),
binary wheels only, so Pillow's compiled parts match Amazon Linux 2023 whatever machine runs synth.
boto3 comes with the runtime and Powertools from its public layer, so neither is bundled.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, IgnoreMode, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from infra.config import REPO_ROOT

LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_PYTHON_VERSION = "3.14"
# Lambda's Amazon Linux 2023 has glibc 2.34: wheels for manylinux 2.28 and older all run there.
# pip matches --platform tags literally, so the older spellings are listed too (rpds-py ships 2014 only).
PIP_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
CODE_PACKAGES = ("common", "functions")
REQUIREMENTS = "functions/requirements.txt"

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


def pip_install_command(requirements: Path, target: Path) -> list[str]:
    """pip arguments that fetch Lambda-platform wheels (never builds from source)."""
    return [
        sys.executable, "-m", "pip", "install",
        "--requirement", str(requirements),
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
    """Copies the code packages and pip-installs the requirements into the asset's output folder."""

    def __init__(self, *, source: Path = REPO_ROOT) -> None:
        self._source = source

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        out = Path(output_dir)
        for package in CODE_PACKAGES:
            shutil.copytree(self._source / package, out / package, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
        requirements = self._source / REQUIREMENTS
        if requirements.exists():
            result = subprocess.run(pip_install_command(requirements, out), capture_output=True, text=True,
                                    check=False)
            if result.returncode != 0:
                raise RuntimeError(f"pip could not install the Lambda dependencies from {REQUIREMENTS} for "
                                   f"{PIP_PLATFORMS[0]} / CPython {LAMBDA_PYTHON_VERSION}:\n{result.stderr[-3000:]}")
        return True


def lambda_code(*, source: Path = REPO_ROOT) -> lambda_.Code:
    """The one code asset shared by the intake and notifier Lambdas (bundled once per synth)."""
    docker_command = (
        "cp -r " + " ".join(f"/asset-input/{p}" for p in CODE_PACKAGES) + " /asset-output/ && "
        f"pip install -r /asset-input/{REQUIREMENTS} -t /asset-output --no-compile"
    )
    return lambda_.Code.from_asset(
        str(source),
        exclude=ASSET_EXCLUDES,
        ignore_mode=IgnoreMode.GLOB,
        asset_hash_type=AssetHashType.SOURCE,  # stable across machines; bundling options are hashed too
        bundling=BundlingOptions(
            # Only used where local bundling is impossible; synth normally never touches Docker.
            image=DockerImage.from_registry(f"public.ecr.aws/sam/build-python{LAMBDA_PYTHON_VERSION}"),
            command=["bash", "-c", docker_command],
            local=LocalPythonBundling(source=source),
        ),
    )
