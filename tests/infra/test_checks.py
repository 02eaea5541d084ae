"""cdk-nag (AwsSolutions) and cfn-lint hold the synthesized templates to AWS's rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import Validations
from aws_cdk import aws_s3 as s3

from infra.app import build_app

# cfn-lint findings we accept, and why. Anything else (error or warning) fails the test.
CFN_LINT_IGNORED = {
    # CDK emits explicit DependsOn next to GetAtt/Ref on purpose (ordering of IAM policies vs. functions).
    "W3005": "redundant DependsOn that CDK adds deliberately",
}


def test_nag_runs_on_every_synth_and_all_real_findings_are_acknowledged(
        cdk_context: dict[str, Any], tmp_path: Path) -> None:
    """Add one careless bucket to the real stack: synth must fail, and on that bucket alone."""
    app, stack = build_app(context={**cdk_context, "aws:cdk:bundling-stacks": []}, outdir=str(tmp_path))
    s3.Bucket(stack, "CarelessBucket")
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    (nag,) = [r for r in report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    paths = {c["constructPath"] for v in nag["violations"] for c in v["violatingConstructs"]}
    rules = {v["ruleName"] for v in nag["violations"]}
    assert paths == {f"{stack.stack_name}/CarelessBucket/Resource"}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules  # no access logs, no TLS-only policy


def test_every_acknowledgment_names_one_finding_with_a_reason(default: Any) -> None:
    acknowledged: dict[str, str] = {}
    for construct in default.stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                acknowledged.update({f"{construct.node.path} {k}": v for k, v in entry.data.items()
                                     if k.startswith("Annotation::AwsSolutions-")})
    assert acknowledged
    for finding, reason in acknowledged.items():
        rule = finding.split("Annotation::", 1)[1]
        assert len(reason) >= 40, finding
        # IAM4/IAM5 acknowledgments must name the exact policy or resource, never the whole rule.
        if rule.startswith(("AwsSolutions-IAM4", "AwsSolutions-IAM5")):
            assert "[" in rule, finding


@pytest.mark.parametrize("which", ["default", "variant"])
def test_cfn_lint_finds_nothing_beyond_the_documented_ignores(which: str, request: pytest.FixtureRequest) -> None:
    synth = request.getfixturevalue(which)
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), "--format", "json", "--ignore-checks", *CFN_LINT_IGNORED, "--", str(synth.template_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], [(f["Rule"]["Id"], f["Message"]) for f in findings]
    assert result.returncode == 0, result.stderr
