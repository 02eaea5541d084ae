"""docs/deploy.md says what the synthesized template holds: its named alarms, resource types and settings."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from cli.toolchain import SUPPORTED_NODE_MAJORS
from infra.config import REPO_ROOT

DEPLOY_MD = REPO_ROOT / "docs" / "deploy.md"
SECTION = "## What the template holds"


def _section() -> str:
    text = DEPLOY_MD.read_text()
    assert text.count(SECTION) == 1
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def _table_after(marker: str) -> list[list[str]]:
    block = _section().split(marker, 1)[1]
    rows = []
    for line in block.splitlines():
        if line.startswith("|") and not line.startswith("| ---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows and not line.startswith("|"):
            break
    return rows[1:]  # without the header


def documented_alarms() -> set[str]:
    names = set()
    for first, _ in _table_after("**Alarms**"):
        names |= set(re.findall(r"`([A-Za-z0-9]+)`", first))
    return names


def documented_settings() -> list[tuple[str, str, Any]]:
    found = []
    for resource, settings in _table_after("**Resources and settings**"):
        (resource_type,) = re.findall(r"`([A-Za-z0-9:]+)`", resource)
        found.append((resource_type, "", None))
        for path, value in re.findall(r"`([^`=]+?) = ([^`]+)`", settings):
            found.append((resource_type, path, json.loads(value)))
    return found


def _at(properties: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(properties, list) and part.isdigit() and int(part) < len(properties):
            properties = properties[int(part)]
        elif isinstance(properties, dict) and part in properties:
            properties = properties[part]
        else:
            return _MISSING
    return properties


_MISSING = object()


def _alarm_names(synth: Any) -> set[str]:
    monitoring = synth.stack.monitoring
    return {alarm.node.id for alarm in monitoring.alarms}


def test_every_alarm_is_documented_and_every_documented_alarm_exists(default: Any) -> None:
    assert _alarm_names(default) == documented_alarms()
    assert len(default.resources("AWS::CloudWatch::Alarm")) == len(documented_alarms())


@pytest.mark.parametrize(("resource_type", "path", "value"), documented_settings(),
                         ids=lambda v: str(v) if not isinstance(v, list | dict) else json.dumps(v))
def test_each_documented_resource_and_setting_is_in_the_template(default: Any, resource_type: str, path: str,
                                                                value: Any) -> None:
    resources = default.resources(resource_type)
    assert resources, f"docs/deploy.md names {resource_type}; the template has none"
    if path:
        found = [_at(r.get("Properties", {}), path) for r in resources.values()]
        assert value in found, f"{resource_type}.{path}: docs say {value!r}, the template has {found}"


def test_the_check_really_fails_on_a_claim_the_template_does_not_hold(default: Any) -> None:
    jobs = default.resources("AWS::Batch::JobDefinition").values()
    assert 3 not in [_at(r["Properties"], "RetryStrategy.Attempts") for r in jobs]  # the stale "3 attempts"
    assert _at({"a": [{"b": 1}]}, "a.0.b") == 1 and _at({"a": []}, "a.0.b") is _MISSING


def test_the_docs_ask_for_a_supported_node() -> None:
    text = DEPLOY_MD.read_text()
    assert f"Node.js {SUPPORTED_NODE_MAJORS[0]} or {SUPPORTED_NODE_MAJORS[1]}" in text
    assert "Node 18+" not in text and "both Lambdas" not in text
