"""S3 upload prefix -> encrypted SQS (+ DLQ) -> intake Lambda with partial batch responses."""

from __future__ import annotations

from typing import Any

from infra.config import POWERTOOLS_VERSION
from infra.constructs.bundling import LAMBDA_RUNTIME
from infra.constructs.intake import INTAKE_HANDLER
from infra.constructs.lambdas import powertools_parameter_name
from infra.constructs.notifier import NOTIFIER_HANDLER
from infra.stack import component_environment


def test_only_objects_created_under_the_upload_prefix_reach_the_intake_queue(default: Any) -> None:
    queue_id = default.logical_id(default.stack.intake.queue)
    notification = default.one("Custom::S3BucketNotifications")
    assert notification["BucketName"] == {"Ref": default.logical_id(default.stack.storage.input_bucket)}
    assert notification["NotificationConfiguration"] == {"QueueConfigurations": [{
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": default.config.settings.upload_prefix}]}},
        "QueueArn": {"Fn::GetAtt": [queue_id, "Arn"]},
    }]}
    # Only S3, for this bucket in this account (bucket names are global and can be taken over), may send.
    (queue_policy,) = [p for p in default.resources("AWS::SQS::QueuePolicy").values()
                       if {"Ref": queue_id} in p["Properties"]["Queues"]]
    (statement,) = [s for s in queue_policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"] == {
        "ArnLike": {"aws:SourceArn": {"Fn::GetAtt": [default.logical_id(default.stack.storage.input_bucket), "Arn"]}},
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
    }
    # The notification is configured only after the policy exists (S3 sends a test message).
    (notification_id,) = default.resources("Custom::S3BucketNotifications")
    policy_id = next(k for k, v in default.resources("AWS::SQS::QueuePolicy").items() if v is queue_policy)
    assert policy_id in default.raw["Resources"][notification_id]["DependsOn"]


def test_intake_queue_is_encrypted_with_a_dead_letter_queue(default: Any) -> None:
    intake = default.stack.intake
    queue = default.raw["Resources"][default.logical_id(intake.queue)]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [default.logical_id(intake.dead_letter_queue), "Arn"]},
        "maxReceiveCount": default.config.intake_max_receive_count,
    }
    assert queue["VisibilityTimeout"] >= 6 * default.config.intake_timeout_seconds
    dlq = default.raw["Resources"][default.logical_id(intake.dead_letter_queue)]["Properties"]
    assert dlq["SqsManagedSseEnabled"] is True
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_event_source_batches_and_reports_item_failures(default: Any) -> None:
    config = default.config
    default.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "EventSourceArn": {"Fn::GetAtt": [default.logical_id(default.stack.intake.queue), "Arn"]},
        "FunctionName": {"Ref": default.logical_id(default.stack.intake.function)},
        "BatchSize": config.intake_batch_size,
        "MaximumBatchingWindowInSeconds": config.intake_batch_window_seconds,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": config.intake_max_concurrency},
    })


def test_the_event_source_throttles_and_nothing_is_reserved_by_default(default: Any, variant: Any) -> None:
    """A reservation fails to deploy in accounts without headroom (new accounts); the event source's
    maximum concurrency needs none. A configured reservation is never below it (no poller throttles)."""
    function = default.raw["Resources"][default.logical_id(default.stack.intake.function)]["Properties"]
    assert default.config.intake_reserved_concurrency is None
    assert "ReservedConcurrentExecutions" not in function
    assert _intake_mapping(default)["ScalingConfig"] == {"MaximumConcurrency": 5}
    reserved = variant.raw["Resources"][variant.logical_id(variant.stack.intake.function)]["Properties"]
    assert reserved["ReservedConcurrentExecutions"] == 8
    assert _intake_mapping(variant)["ScalingConfig"] == {"MaximumConcurrency": 5}


def _intake_mapping(synth: Any) -> dict[str, Any]:
    (mapping,) = [m["Properties"] for m in synth.resources("AWS::Lambda::EventSourceMapping").values()
                  if m["Properties"]["FunctionName"] == {"Ref": synth.logical_id(synth.stack.intake.function)}]
    return mapping


def test_functions_run_the_agreed_handlers_with_the_settings_environment(default: Any) -> None:
    for component, handler in ((default.stack.intake, INTAKE_HANDLER), (default.stack.notifier, NOTIFIER_HANDLER)):
        function = default.raw["Resources"][default.logical_id(component.function)]["Properties"]
        assert function["Handler"] == handler
        assert function["Runtime"] == LAMBDA_RUNTIME.name
        assert function["TracingConfig"] == {"Mode": "Active"}
        variables = function["Environment"]["Variables"]
        settings = default.config.settings
        assert variables["UPSCALER_UPLOAD_PREFIX"] == settings.upload_prefix
        assert variables["UPSCALER_MAX_UPLOAD_BYTES"] == str(settings.max_upload_bytes)
        assert variables["UPSCALER_JOB_BACKEND"] == "batch"
        assert variables["UPSCALER_INPUT_BUCKET"] == {"Ref": default.logical_id(default.stack.storage.input_bucket)}
        assert variables["UPSCALER_JOBS_TABLE"] == {"Ref": default.logical_id(default.stack.storage.table)}
        assert variables["UPSCALER_TOPIC_ARN"] == {"Ref": default.logical_id(default.stack.notifications.topic)}
        assert variables["UPSCALER_JOB_QUEUE"] == {"Fn::GetAtt": [default.logical_id(default.stack.gpu.job_queue),
                                                                  "JobQueueArn"]}
        assert variables["UPSCALER_JOB_DEFINITION"] == {"Ref": default.logical_id(default.stack.gpu.job_definition)}
        # Every non-empty setting is there, under the name Settings.from_env reads.
        assert set(component_environment(settings)) <= set(variables)
        assert "UPSCALER_MODEL_DIR" not in variables  # empty = default: never override with ""


def test_powertools_comes_from_the_public_layer_parameter_of_a_pinned_version(default: Any) -> None:
    parameters = default.raw["Parameters"]
    (name,) = [k for k, v in parameters.items() if v["Default"].startswith("/aws/service/powertools/python/")]
    assert parameters[name]["Default"] == f"/aws/service/powertools/python/x86_64/python3.14/{POWERTOOLS_VERSION}"
    assert parameters[name]["Default"] == powertools_parameter_name()  # what `upscaler doctor` checks
    assert parameters[name]["Type"] == "AWS::SSM::Parameter::Value<String>"
    default.template.has_resource_properties("AWS::Lambda::Function", {
        "Handler": INTAKE_HANDLER, "Layers": [{"Ref": name}]})


def test_lambda_logs_have_retention(default: Any) -> None:
    default.template.has_resource_properties("AWS::Logs::LogGroup", {
        "RetentionInDays": default.config.log_retention_days})
    for component in (default.stack.intake, default.stack.notifier):
        function = default.raw["Resources"][default.logical_id(component.function)]["Properties"]
        assert function["LoggingConfig"]["LogFormat"] == "JSON"
        assert function["LoggingConfig"]["ApplicationLogLevel"] == default.config.settings.log_level
        assert function["LoggingConfig"]["LogGroup"] == {"Ref": default.logical_id(component.handler.log_group)}
