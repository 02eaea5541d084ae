"""Synthesizes the app once per session (jsii synth is slow) and hands out its CloudFormation templates.

Context comes from cdk.json exactly as the CDK CLI passes it (its `context` block), plus
`aws:cdk:bundling-stacks: []`, which is how the CLI itself says "do not bundle assets" (`cdk ls`):
the pip step of the Lambda bundle is exercised by test_cli_synth.py instead.
The cdk-nag AwsSolutions plugin is on, so every fixture below is also a passing nag run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import CfnElement
from aws_cdk.assertions import Template

from infra.app import build_app
from infra.config import InfraConfig, config_from_context, load_cdk_json_context
from infra.stack import UpscalerStack

WEBHOOK_SUCCEEDED = "https://hooks.example.com/upscaled"
WEBHOOK_ALL = "https://ops.example.com/all-events"
JWT_ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example1"
VARIANT_CONTEXT = {
    "upscaler:stack_name": "UpscalerVariant",
    "upscaler:on_demand_max_vcpus": "8",  # strings, as `-c key=value` delivers them
    "upscaler:egress": "nat",
    "upscaler:alarm_email": "ops@example.com",
    "upscaler:retain_data": "false",
    "upscaler:intake_reserved_concurrency": "8",
    "upscaler:api_jwt_issuer": JWT_ISSUER,  # the HTTP API takes the issuer's tokens instead of SigV4
    "upscaler:api_jwt_audience": "client-one,client-two",
    "upscaler:api_web": "false",
    "upscaler:webhooks": json.dumps([
        {"url": WEBHOOK_SUCCEEDED, "filter_policy": {"event_type": ["upscale.succeeded"]}},
        WEBHOOK_ALL,
    ]),
}


@dataclass(frozen=True)
class Synthesized:
    config: InfraConfig
    stack: UpscalerStack
    template: Template
    raw: Mapping[str, Any]  # the template JSON as written to cdk.out
    template_path: Path

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.raw["Resources"].items() if v["Type"] == resource_type}

    def one(self, resource_type: str) -> dict[str, Any]:
        (found,) = self.resources(resource_type).values()
        return found["Properties"]

    def logical_id(self, construct: Any) -> str:
        """Of an L2 construct's resource, or of an L1 resource itself."""
        element = construct if isinstance(construct, CfnElement) else construct.node.default_child
        return str(self.stack.resolve(self.stack.get_logical_id(element)))

    def role_statements(self, role_construct: Any) -> list[dict[str, Any]]:
        """Every statement of the inline policies attached to one role."""
        role_id = self.logical_id(role_construct)
        found: list[dict[str, Any]] = []
        for policy in self.resources("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"]["Roles"]:
                found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
        for inline in self.raw["Resources"][role_id]["Properties"].get("Policies", []):
            found.extend(inline["PolicyDocument"]["Statement"])
        return found

    def statement(self, role_construct: Any, sid: str) -> dict[str, Any]:
        (found,) = [s for s in self.role_statements(role_construct) if s.get("Sid") == sid]
        return found


def synthesize(context: Mapping[str, Any], outdir: Path) -> Synthesized:
    app, stack = build_app(context={**context, "aws:cdk:bundling-stacks": []}, outdir=str(outdir))
    assembly = app.synth()  # runs the validation plugins (cdk-nag): raises on unacknowledged findings
    artifact = assembly.get_stack_artifact(stack.artifact_id)
    path = Path(assembly.directory) / artifact.template_file
    raw = json.loads(path.read_text())
    return Synthesized(config=config_from_context(context), stack=stack, template=Template.from_json(raw),
                       raw=raw, template_path=path)


@pytest.fixture(scope="session")
def cdk_context() -> dict[str, Any]:
    return load_cdk_json_context()


@pytest.fixture(scope="session")
def default(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    yield synthesize(cdk_context, tmp_path_factory.mktemp("cdk-default"))


@pytest.fixture(scope="session")
def variant(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    """Webhooks, an on-demand environment, NAT egress, alarm e-mail, no data retention; a JWT-authorized API
    without the try-it page."""
    yield synthesize({**cdk_context, **VARIANT_CONTEXT}, tmp_path_factory.mktemp("cdk-variant"))
