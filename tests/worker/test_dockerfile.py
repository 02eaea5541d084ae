"""gpu_batch/Dockerfile cannot be built here (no Docker engine): check what it names exists and runs."""

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
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from common.contract import WORKER_MODULE

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "gpu_batch" / "Dockerfile"
REQUIREMENTS = REPO / "gpu_batch" / "requirements-gpu.txt"
# Project dependencies deliberately left out of the image, and why.
NOT_IN_IMAGE = {"onnxruntime": "replaced by onnxruntime-gpu (same module)", "moto": "the local emulator only"}
GPU_RUNTIME = "onnxruntime-gpu"


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
    lines = [ln.split("#")[0].strip() for ln in REQUIREMENTS.read_text().splitlines()]
    return [Requirement(ln) for ln in lines if ln]


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


def test_requirements_are_exact_pins_of_real_installable_packages():
    reqs = requirements()
    names = {canonicalize_name(r.name) for r in reqs}
    assert GPU_RUNTIME in names and "onnxruntime" not in names
    for req in reqs:
        pins = [s for s in req.specifier if s.operator == "=="]
        assert len(pins) == 1, f"{req} should be pinned with =="
        if canonicalize_name(req.name) == GPU_RUNTIME:
            continue  # cannot be installed on a machine without CUDA; checked against the CPU build below
        installed = md.version(req.name)  # raises if the name is not a real, installed distribution
        assert req.specifier.contains(installed), f"{req} but the tests run with {installed}"
    gpu_pin = next(r for r in reqs if canonicalize_name(r.name) == GPU_RUNTIME)
    assert next(iter(gpu_pin.specifier)).version.split(".")[0] == md.version("onnxruntime").split(".")[0]


def test_requirements_cover_the_project_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {canonicalize_name(r.name) for r in requirements()}
    for dep in map(Requirement, project):
        name = canonicalize_name(dep.name)
        if name in NOT_IN_IMAGE:
            continue
        assert name in pinned, f"project dependency {dep.name} is missing from {REQUIREMENTS.name}"


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


_GUARD = r"""
import importlib.abc, importlib.metadata as md, sys
allowed = set(sys.argv[1].split(","))
owners = md.packages_distributions()
class Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        dists = {d.lower().replace("_", "-") for d in owners.get(top, [])}
        if dists and not dists & allowed:
            raise ImportError(f"{name} (from {sorted(dists)}) is not in requirements-gpu.txt")
        return None
sys.meta_path.insert(0, Guard())
import cli.main, gpu_batch.worker.main, gpu_batch.engine  # the image's two commands and the engine
"""


def test_image_requirements_are_enough_for_the_worker_and_the_cli():
    """Import both commands with every package outside requirements-gpu.txt (and their deps) blocked."""
    env = default_environment()
    allowed: set[str] = set()
    todo = ["onnxruntime" if canonicalize_name(r.name) == GPU_RUNTIME else r.name for r in requirements()]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in allowed:
            continue
        allowed.add(name)
        for raw in md.requires(name) or []:
            dep = Requirement(raw)
            if dep.marker is None or dep.marker.evaluate({**env, "extra": ""}):
                todo.append(dep.name)
    allowed.add("upscaler")  # the project itself (copied into the image)
    proc = subprocess.run([sys.executable, "-c", _GUARD, ",".join(sorted(allowed))], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("blocked", ["moto"])
def test_import_guard_really_blocks(blocked):
    proc = subprocess.run([sys.executable, "-c", _GUARD.replace("import cli.main", f"import {blocked}, cli.main"),
                           "boto3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "not in requirements-gpu.txt" in proc.stderr
