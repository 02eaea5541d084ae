"""gpu_batch/Dockerfile cannot be built here (no Docker engine): check what it names exists and runs.

Its Python packages are the `worker` extra of pyproject.toml as the lock pins it (requirements/worker.txt,
exported from uv.lock with hashes: infra/lock.py; tests/infra/test_lock.py checks the export).
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata as md
import importlib.util
import json
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from import_guard import BLOCKED, closure, import_with_only
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from common.contract import WORKER_MODULE
from infra.dependencies import extra_requirements

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "gpu_batch" / "Dockerfile"
WORKER_EXTRA = "worker"
WORKER_REQUIREMENTS = "requirements/worker.txt"  # infra/lock.py's `worker` target
GPU_RUNTIME = "onnxruntime-gpu"
# Never in the image: the CPU build would shadow the CUDA one (same module), the rest is local or dev only.
NOT_IN_IMAGE = {"onnxruntime", "moto", "pytest", "ruff", "mypy", "ncnn", "scikit-image", "aws-cdk-lib"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def requirements() -> list[Requirement]:
    """What `pip install '.[worker]'` asks for: the base dependencies and the expanded worker extra."""
    return extra_requirements(WORKER_EXTRA, include_base=True)


def test_every_copy_source_exists_and_is_in_the_build_context():
    ignore = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in ignore:
            negate, pat = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
            parts = path.split("/")
            if any(fnmatch.fnmatch("/".join(parts[:i]), pat) for i in range(1, len(parts) + 1)):
                verdict = not negate
        return verdict

    copies = [args for kw, args in instructions() if kw == "COPY"]
    assert copies
    for args in copies:
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        for source in words[:-1]:
            assert (REPO / source).exists(), f"COPY source {source} does not exist"
            assert not ignored(source), f"COPY source {source} is excluded by .dockerignore"
    for heavy in (".venv", "node_modules", "cdk.out", ".git"):
        assert ignored(heavy), f".dockerignore should keep {heavy} out of the build context"


def test_dependencies_are_installed_from_the_lock_before_the_code():
    """One hashed `pip install -r requirements/worker.txt` with only that file copied: cached until a pin changes."""
    found = instructions()
    installs = [i for i, (kw, args) in enumerate(found) if kw == "RUN" and "pip install" in args]
    assert len(installs) == 1, "the image installs its packages with one pip install"
    assert f"pip install --require-hashes --no-deps -r {WORKER_REQUIREMENTS}" in found[installs[0]][1]
    copied_before = [shlex.split(args)[:-1] for kw, args in found[:installs[0]] if kw == "COPY"]
    assert copied_before == [[WORKER_REQUIREMENTS]], copied_before


def test_the_worker_extra_takes_the_cuda_runtime_and_nothing_local():
    names = {canonicalize_name(r.name) for r in requirements()}
    assert GPU_RUNTIME in names
    assert not names & NOT_IN_IMAGE
    # The closure too: no dependency of a dependency brings the CPU build (or moto) back in.
    cpu_closure = closure(r for r in requirements() if canonicalize_name(r.name) != GPU_RUNTIME)
    assert not cpu_closure & (NOT_IN_IMAGE - {"pytest"})
    gpu = next(r for r in requirements() if canonicalize_name(r.name) == GPU_RUNTIME)
    cuda_build = next(iter(gpu.specifier)).version
    assert cuda_build.split(".")[0] == md.version("onnxruntime").split(".")[0]  # same major API as the tests run


def test_the_locked_requirements_pin_the_whole_worker_extra():
    """Every package the worker extra names (and boto3) is pinned, the CUDA runtime among them, the CPU one not."""
    pinned = {canonicalize_name(line.split("==")[0]) for line in (REPO / WORKER_REQUIREMENTS).read_text().splitlines()
              if "==" in line and not line.startswith((" ", "#"))}
    assert {canonicalize_name(r.name) for r in requirements()} <= pinned
    assert GPU_RUNTIME in pinned and not pinned & NOT_IN_IMAGE


def test_entrypoint_is_the_worker_module_and_it_imports():
    entrypoints = [json.loads(args) for kw, args in instructions() if kw == "ENTRYPOINT"]
    assert entrypoints == [["python", "-m", WORKER_MODULE]]
    assert importlib.util.find_spec(f"{WORKER_MODULE}.__main__") is not None
    assert callable(importlib.import_module(f"{WORKER_MODULE}.main").main)


def test_image_runs_unprivileged_with_models_baked_in():
    found = instructions()
    users = [args for kw, args in found if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    env = " ".join(args for kw, args in found if kw == "ENV")
    assert "UPSCALER_MODEL_DIR=/opt/models" in env
    assert found[0][0] == "ARG" and "cudnn-runtime" in found[0][1]


def test_model_build_runs_the_real_cli_command():
    runs = " && ".join(args for kw, args in instructions() if kw == "RUN")
    assert "python -m cli.main models build" in runs
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["upscaler"] == "cli.main:app"  # so `python -m cli.main` is the `upscaler` console script
    proc = subprocess.run([sys.executable, "-m", "cli.main", "models", "build", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "precision" in proc.stdout


# The image's two commands and the engine.
IMAGE_MODULES = ["cli.main", "gpu_batch.worker.main", "gpu_batch.engine"]


def image_closure() -> set[str]:
    """The installed distributions the image would have; the CPU build stands in for onnxruntime-gpu here."""
    cpu = [Requirement("onnxruntime") if canonicalize_name(r.name) == GPU_RUNTIME else r for r in requirements()]
    return closure(cpu)


def test_image_requirements_are_enough_for_the_worker_and_the_cli():
    """Import both commands with every package outside the worker extra (and its deps) blocked."""
    proc = import_with_only(image_closure(), IMAGE_MODULES)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("blocked", ["moto"])
def test_import_guard_really_blocks(blocked):
    proc = import_with_only(image_closure(), [blocked, *IMAGE_MODULES])
    assert proc.returncode != 0 and BLOCKED in proc.stderr
