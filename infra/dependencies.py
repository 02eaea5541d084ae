"""Each deployable target's Python packages, read from pyproject.toml, the one place they are kept.

Targets are optional-dependency extras (lambda, worker, local, infra, dev); an extra may name the project's
own extras (`upscaler[lambda,engine]`), which are expanded here as pip expands them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra.config import REPO_ROOT

PYPROJECT = REPO_ROOT / "pyproject.toml"


class DependencyError(ValueError):
    """pyproject.toml does not describe the asked-for target."""


def _project(pyproject: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads(pyproject.read_text())["project"]
    return project


def extra_requirements(extra: str, *, include_base: bool = False, pyproject: Path = PYPROJECT) -> list[Requirement]:
    """The requirements of one extra with the project's own extras expanded, each listed once (in order)."""
    project = _project(pyproject)
    name = canonicalize_name(str(project["name"]))
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    found: dict[str, Requirement] = {}
    if include_base:
        found.update((str(r), r) for r in map(Requirement, project.get("dependencies", [])))
    seen: set[str] = set()
    todo = [extra]
    while todo:
        current = todo.pop(0)
        if current in seen:
            continue
        if current not in extras:
            raise DependencyError(f"pyproject.toml has no optional-dependencies extra {current!r}")
        seen.add(current)
        for raw in extras[current]:
            req = Requirement(raw)
            if canonicalize_name(req.name) == name:
                todo.extend(sorted(req.extras))
            else:
                found.setdefault(str(req), req)
    return list(found.values())
