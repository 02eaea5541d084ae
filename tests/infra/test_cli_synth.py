"""The real CDK CLI (node_modules/aws-cdk) synthesizes the app offline: no AWS credentials, no Docker.

This is also the one place the Lambda bundle is really built (local bundling: copy + pip for the
Lambda platform), so it checks what went into the zip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from infra.config import REPO_ROOT
from infra.constructs.bundling import LAMBDA_PYTHON_VERSION

pytestmark = pytest.mark.slow

NPX = shutil.which("npx")


def _offline_env() -> dict[str, str]:
    """No credentials and no profile: an environment-agnostic stack must not need any."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


@pytest.mark.skipif(NPX is None, reason="Node.js is not installed (`make setup` needs it)")
def test_cdk_cli_synth_succeeds_offline_and_bundles_the_lambda_code(tmp_path: Path) -> None:
    out = tmp_path / "cdk.out"
    result = subprocess.run([str(NPX), "cdk", "synth", "--quiet", "--output", str(out)], cwd=REPO_ROOT,
                            env=_offline_env(), capture_output=True, text=True, timeout=420, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "NOTICES" not in result.stdout + result.stderr  # cdk.json: "notices": false

    template = json.loads((out / "Upscaler.template.json").read_text())
    assert "CDKMetadata" not in template["Resources"]  # cdk.json: "versionReporting": false
    report = json.loads((out / "validation-report.json").read_text())
    assert report["pluginReports"] == []  # cdk-nag ran and found nothing unacknowledged

    assets = json.loads((out / "Upscaler.assets.json").read_text())
    zips = [out / a["source"]["path"] for a in assets["files"].values() if a["source"]["packaging"] == "zip"]
    # Besides ours, CDK's own custom-resource handlers (prefix-list lookup, default security group).
    (bundle,) = [z for z in zips if (z / "common").is_dir()]
    assert (bundle / "common" / "settings.py").is_file()
    assert (bundle / "functions" / "__init__.py").is_file()
    assert (bundle / "jsonschema").is_dir()
    tag = LAMBDA_PYTHON_VERSION.replace(".", "")
    assert list((bundle / "PIL").glob(f"_imaging.cpython-{tag}-x86_64-linux-gnu.so"))  # Lambda's platform
    assert not list(bundle.rglob("__pycache__"))
    assert not (bundle / ".venv").exists() and not (bundle / "gpu_batch").exists()
    (image,) = assets["dockerImages"].values()
    assert image["source"]["dockerFile"] == "gpu_batch/Dockerfile"


@pytest.mark.skipif(NPX is None, reason="Node.js is not installed (`make setup` needs it)")
def test_cli_telemetry_is_off_for_this_project() -> None:
    result = subprocess.run([str(NPX), "cdk", "cli-telemetry", "--status"], cwd=REPO_ROOT, env=_offline_env(),
                            capture_output=True, text=True, timeout=120, check=False)
    assert "CLI Telemetry is disabled" in result.stdout + result.stderr
