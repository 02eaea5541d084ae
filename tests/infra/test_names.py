"""A second stack fits in the same account and region: no physical name is fixed by the template."""

from __future__ import annotations

from typing import Any

# CloudFormation properties that name a resource account- or region-wide (a clash fails the second deploy).
PHYSICAL_NAME_PROPERTIES = {
    "BucketName", "TableName", "QueueName", "TopicName", "FunctionName", "RoleName", "InstanceProfileName",
    "LogGroupName", "JobQueueName", "JobDefinitionName", "ComputeEnvironmentName", "SchedulingPolicyName",
    "DashboardName", "AlarmName", "LaunchTemplateName", "GroupName", "KeyAlias", "AliasName", "Name",
}


def _literal_names(synth: Any) -> dict[str, str]:
    found = {}
    for logical_id, resource in synth.raw["Resources"].items():
        for key, value in resource.get("Properties", {}).items():
            if key in PHYSICAL_NAME_PROPERTIES and isinstance(value, str):
                found[f"{logical_id}.{key}"] = value
    return found


def test_no_resource_has_a_fixed_physical_name(default: Any, variant: Any) -> None:
    for synth in (default, variant):
        assert _literal_names(synth) == {}


def test_names_that_must_be_readable_derive_from_the_stack_and_region(default: Any) -> None:
    dashboard = default.one("AWS::CloudWatch::Dashboard")["DashboardName"]
    assert dashboard == {"Fn::Join": ["-", ["Upscaler", {"Ref": "AWS::Region"}]]}  # dashboards are account-wide
    assert "JobQueueName" not in default.one("AWS::Batch::JobQueue")


def test_the_stack_decides_its_resource_names_not_the_context() -> None:
    import pytest

    from infra.config import ConfigError, config_from_context

    for key in ("job_queue", "job_definition", "input_bucket", "jobs_table", "work_queue_url"):
        with pytest.raises(ConfigError, match="decided by the stack"):
            config_from_context({f"upscaler:{key}": "mine"})
