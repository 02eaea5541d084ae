"""Import modules with every installed distribution outside a target's dependency closure blocked.

A target (the Lambda bundle, the worker image) installs one extra of pyproject.toml; this proves its code
imports with that and nothing else, without building the bundle or the image.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PROJECT = "upscaler"  # the project's own packages are on the path in every target

_GUARD = r"""
import importlib, importlib.abc, importlib.metadata as md, sys
allowed = set(sys.argv[1].split(","))
owners = md.packages_distributions()
class Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        dists = {d.lower().replace("_", "-") for d in owners.get(top, [])}
        if dists and not dists & allowed:
            raise ImportError(f"{name} (from {sorted(dists)}) is outside the target's dependencies")
        return None
sys.meta_path.insert(0, Guard())
for module in sys.argv[2:]:
    importlib.import_module(module)
"""
BLOCKED = "is outside the target's dependencies"


def closure(requirements: Iterable[Requirement]) -> set[str]:
    """The installed distributions these requirements pull in (with the extras they ask for)."""
    env = default_environment()
    allowed: set[str] = {PROJECT}
    todo = [(r.name, frozenset(r.extras)) for r in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), extras)
        if key in seen:
            continue
        seen.add(key)
        allowed.add(key[0])
        for raw in md.requires(name) or []:
            dep = Requirement(raw)
            if dep.marker is None or any(dep.marker.evaluate({**env, "extra": e}) for e in ("", *extras)):
                todo.append((dep.name, frozenset(dep.extras)))
    return allowed


def import_with_only(allowed: set[str], modules: Iterable[str]) -> subprocess.CompletedProcess[str]:
    """Run a fresh interpreter that imports `modules` with everything outside `allowed` blocked."""
    return subprocess.run([sys.executable, "-c", _GUARD, ",".join(sorted(allowed)), *modules], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
