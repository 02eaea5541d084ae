"""The Lambda bundle installs the project's `lambda` extra as the lock pins it, and that extra is enough."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from import_guard import BLOCKED, closure, import_with_only
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra.config import REPO_ROOT
from infra.constructs.api import API_HANDLER
from infra.constructs.bundling import (
    LAMBDA_PYTHON_VERSION,
    LAMBDA_REQUIREMENTS,
    LocalPythonBundling,
    bundle_requirements,
    docker_bundling_command,
)
from infra.constructs.intake import INTAKE_HANDLER
from infra.constructs.notifier import NOTIFIER_HANDLER
from infra.constructs.scaler import SCALER_HANDLER
from infra.constructs.webhook_delivery import WEBHOOKS_HANDLER
from infra.dependencies import DependencyError, extra_requirements
from infra.lock import PROVIDED_BY_LAMBDA

# Every function of the stack runs from the one bundle.
HANDLERS = [handler.rpartition(".")[0]
            for handler in (INTAKE_HANDLER, NOTIFIER_HANDLER, SCALER_HANDLER, WEBHOOKS_HANDLER, API_HANDLER)]


def names(requirements: list[str] | list[Requirement]) -> set[str]:
    return {canonicalize_name(Requirement(str(r)).name) for r in requirements}


def test_bundle_installs_the_lambda_extra_less_what_lambda_provides() -> None:
    extra = names(extra_requirements("lambda"))
    bundled = names(bundle_requirements())
    assert extra - set(PROVIDED_BY_LAMBDA) <= bundled  # the extra's own packages, and what they need
    assert {"pillow", "jsonschema", "rpds-py"} <= bundled
    assert not bundled & {"boto3", "botocore", "aws-lambda-powertools", "numpy", "onnxruntime", "moto"}
    assert all("==" in pin for pin in bundle_requirements())


def test_handlers_import_with_only_the_lambda_extra_and_the_runtime() -> None:
    """What the function has: the bundle, boto3 (the runtime; the base dependency) and Powertools (the layer)."""
    allowed = closure(extra_requirements("lambda", include_base=True))
    proc = import_with_only(allowed, HANDLERS)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_cdk_app_imports_with_only_the_infra_extra() -> None:
    """`cdk synth` needs no engine, emulator or image library: the infra extra and boto3 are enough."""
    proc = import_with_only(closure(extra_requirements("infra", include_base=True)), ["infra.app"])
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_guard_really_blocks() -> None:
    proc = import_with_only(closure(extra_requirements("lambda", include_base=True)), ["moto", *HANDLERS])
    assert proc.returncode != 0 and BLOCKED in proc.stderr


def test_docker_fallback_installs_the_same_requirements() -> None:
    command = docker_bundling_command()
    assert f"--require-hashes --no-deps -r /asset-input/{LAMBDA_REQUIREMENTS}" in command


def test_the_project_extras_expand_and_unknown_ones_fail(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "Upscaler"\ndependencies = ["boto3"]\n'
                         '[project.optional-dependencies]\n'
                         'a = ["pillow>=10"]\nb = ["upscaler[a]", "numpy"]\nc = ["upscaler[b,a]"]\n')
    assert sorted(str(r) for r in extra_requirements("c", pyproject=pyproject)) == ["numpy", "pillow>=10"]
    assert names(extra_requirements("a", include_base=True, pyproject=pyproject)) == {"boto3", "pillow"}
    with pytest.raises(DependencyError, match="'nope'"):
        extra_requirements("nope", pyproject=pyproject)


@pytest.mark.slow
def test_local_bundling_builds_the_lambda_platform_bundle(tmp_path: Path) -> None:
    """The real pip step (also run by the CLI synth test), straight into a folder."""
    source = tmp_path / "src"
    for item in ("common", "functions", "requirements"):
        copy = shutil.copytree if (REPO_ROOT / item).is_dir() else shutil.copy
        copy(REPO_ROOT / item, source / item)
    out = tmp_path / "out"
    out.mkdir()
    assert LocalPythonBundling(source=source).try_bundle(str(out))
    tag = LAMBDA_PYTHON_VERSION.replace(".", "")
    assert list((out / "PIL").glob(f"_imaging.cpython-{tag}-x86_64-linux-gnu.so"))
    assert (out / "jsonschema").is_dir() and (out / "functions" / "intake" / "handler.py").is_file()
    installed = {canonicalize_name(p.name.split("-")[0]) for p in out.glob("*.dist-info")}
    assert names(bundle_requirements(source=source)) <= installed
    assert not installed & {"boto3", "botocore", "aws-lambda-powertools"}
