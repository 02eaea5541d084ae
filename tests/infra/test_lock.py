"""Reproducible builds: one lock (uv.lock, hashes) drives the venv, the Lambda bundle and the worker image."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest
from aws_cdk import App, Stack
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra.config import REPO_ROOT
from infra.constructs.batch import WORKER_DOCKERFILE
from infra.constructs.bundling import LAMBDA_REQUIREMENTS, lambda_code
from infra.dependencies import PYPROJECT
from infra.lock import LOCK_FILE, TARGETS, export, requirements_file


def _root_package(lock: dict) -> dict:  # type: ignore[type-arg]
    (root,) = [p for p in lock["package"] if p.get("source", {}).get("editable") == "."]
    return root


def _requirement(name: str, extras: list[str], specifier: str, marker: str | None) -> Requirement:
    text = name + (f"[{','.join(sorted(extras))}]" if extras else "") + specifier
    return Requirement(text + (f"; {marker}" if marker else ""))


def _key(requirement: Requirement) -> tuple[str, tuple[str, ...], str, str]:
    return (canonicalize_name(requirement.name), tuple(sorted(requirement.extras)), str(requirement.specifier),
            str(requirement.marker or ""))


def test_the_lock_holds_what_pyproject_asks_for() -> None:
    """uv.lock records the requirements it was resolved from: they must be today's pyproject.toml (else
    `make lock`). Offline: nothing is resolved again."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    metadata = _root_package(tomllib.loads(LOCK_FILE.read_text()))["metadata"]
    locked = {_key(_requirement(d["name"], d.get("extras", []), d.get("specifier", ""), d.get("marker")))
              for d in metadata["requires-dist"]}
    wanted = {_key(Requirement(r)) for r in project["dependencies"]}
    for extra, requirements in project["optional-dependencies"].items():
        for raw in requirements:
            r = Requirement(raw)
            wanted.add(_key(_requirement(r.name, sorted(r.extras), str(r.specifier), f"extra == '{extra}'")))
    assert locked == wanted, "pyproject.toml and uv.lock differ: run `make lock`"
    assert sorted(metadata["provides-extras"]) == sorted(project["optional-dependencies"])


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_requirements_file_is_exported_from_the_lock(target: str) -> None:
    assert requirements_file(target).read_text() == export(target), f"run `make lock` ({target})"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_requirement_is_pinned_with_hashes(target: str) -> None:
    entries = re.split(r"\n(?=\S)", requirements_file(target).read_text())
    pins = [e for e in entries if e.strip() and not e.startswith("#")]
    assert pins
    for entry in pins:
        assert re.match(r"^[A-Za-z0-9._-]+==[^\s;]+", entry), entry
        assert "--hash=sha256:" in entry, entry


def test_the_lambda_bundle_leaves_out_what_lambda_provides() -> None:
    pinned = {canonicalize_name(Requirement(line.split()[0]).name)
              for line in requirements_file("lambda").read_text().splitlines() if re.match(r"^[a-z0-9]", line)}
    assert {"pillow", "pillow-heif", "jsonschema"} <= pinned
    assert not pinned & {"boto3", "botocore", "s3transfer", "aws-lambda-powertools", "aws-xray-sdk"}


def _asset_hash(source: Path) -> str:
    stack = Stack(App(context={"aws:cdk:bundling-stacks": []}), "Probe")
    config = lambda_code(source=source).bind(stack)
    assert config.s3_location is not None
    return str(stack.resolve(config.s3_location.object_key))


def test_the_lambda_asset_hash_follows_the_lock(tmp_path: Path) -> None:
    source = tmp_path / "src"
    for item in ("common", "functions", "requirements"):
        shutil.copytree(REPO_ROOT / item, source / item, ignore=shutil.ignore_patterns("__pycache__"))
    before = _asset_hash(source)
    assert _asset_hash(source) == before  # stable
    (source / "pyproject.toml").write_text("# not part of the bundle\n")
    assert _asset_hash(source) == before
    lock = source / LAMBDA_REQUIREMENTS
    lock.write_text(lock.read_text().replace("pillow==", "pillow===", 1))  # a new pin, same code
    assert _asset_hash(source) != before


def test_the_worker_image_installs_its_locked_requirements_only() -> None:
    dockerfile = (REPO_ROOT / WORKER_DOCKERFILE).read_text()
    worker = requirements_file("worker").relative_to(REPO_ROOT).as_posix()
    assert f"COPY {worker} " in dockerfile
    assert f"pip install --require-hashes --no-deps -r {worker}" in dockerfile
    assert "pip install '." not in dockerfile  # nothing resolved at build time
    assert f"!{worker}" in (REPO_ROOT / ".dockerignore").read_text()
    pinned = requirements_file("worker").read_text()
    assert "onnxruntime-gpu==" in pinned and "\nonnxruntime==" not in pinned


def test_make_setup_installs_the_locked_dev_requirements() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    dev = requirements_file("dev").relative_to(REPO_ROOT).as_posix()
    assert f"pip install --quiet --require-hashes --no-deps -r {dev}" in makefile
    assert "pip install --quiet --no-deps -e ." in makefile
    assert f"$(VENV)/.installed: pyproject.toml {dev}" in makefile
