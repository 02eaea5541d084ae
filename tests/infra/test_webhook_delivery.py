"""Per-request webhook delivery: the topic's raw SQS subscription, the queue and its DLQ, the DLQ alarm, the
signing secret, and a function that may read job records, the secret and its two queues, and nothing else."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from common.settings import env_var
from functions.webhooks import retry
from functions.webhooks.signing import SigningKeys
from infra.constructs.webhook_delivery import GENERATED_SECRET_CHARACTERS, WEBHOOKS_HANDLER


def _arn(synth: Any, construct: Any) -> dict[str, Any]:
    return {"Fn::GetAtt": [synth.logical_id(construct), "Arn"]}


def test_the_delivery_queue_gets_every_notification_raw(default: Any) -> None:
    hooks = default.stack.webhooks
    default.template.has_resource_properties("AWS::SNS::Subscription", {
        "Protocol": "sqs", "RawMessageDelivery": True, "Endpoint": _arn(default, hooks.queue),
        "TopicArn": {"Ref": default.logical_id(default.stack.notifications.topic)},
        "FilterPolicy": Match.absent()})
    (policy,) = [p["Properties"] for p in default.resources("AWS::SQS::QueuePolicy").values()
                 if p["Properties"]["Queues"] == [{"Ref": default.logical_id(hooks.queue)}]]
    (allow,) = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "sns.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": {
        "Ref": default.logical_id(default.stack.notifications.topic)}}}


def test_the_queue_outlives_24_hours_of_retries_and_redrives_to_the_dlq(default: Any) -> None:
    hooks = default.stack.webhooks
    queue = default.raw["Resources"][default.logical_id(hooks.queue)]["Properties"]
    assert queue["MessageRetentionPeriod"] == retry.QUEUE_RETENTION_SECONDS > retry.GIVE_UP_AFTER_SECONDS + 3600
    assert queue["VisibilityTimeout"] == 6 * retry.FUNCTION_TIMEOUT_SECONDS
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": _arn(default, hooks.dead_letter_queue),
                                      "maxReceiveCount": retry.MAX_RECEIVE_COUNT}
    assert queue["SqsManagedSseEnabled"] is True
    dlq = default.raw["Resources"][default.logical_id(hooks.dead_letter_queue)]["Properties"]
    assert dlq["MessageRetentionPeriod"] == 14 * 86_400


def test_the_dlq_and_the_function_have_alarms(default: Any) -> None:
    hooks = default.stack.webhooks
    alarm_topic = {"Ref": default.logical_id(default.stack.monitoring.alarm_topic)}
    default.template.has_resource_properties("AWS::CloudWatch::Alarm", {
        "MetricName": "ApproximateNumberOfMessagesVisible", "Threshold": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold", "AlarmActions": [alarm_topic],
        "Dimensions": [{"Name": "QueueName",
                        "Value": {"Fn::GetAtt": [default.logical_id(hooks.dead_letter_queue), "QueueName"]}}]})
    default.template.has_resource_properties("AWS::CloudWatch::Alarm", {
        "MetricName": "Errors", "Namespace": "AWS/Lambda", "AlarmActions": [alarm_topic],
        "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": default.logical_id(hooks.function)}}]})


def test_the_signing_secret_is_generated_as_a_valid_standard_webhooks_key(default: Any) -> None:
    secret = default.raw["Resources"][default.logical_id(default.stack.webhooks.secret)]["Properties"]
    generator = secret["GenerateSecretString"]
    assert generator == {"ExcludePunctuation": True, "IncludeSpace": False,
                         "PasswordLength": GENERATED_SECRET_CHARACTERS}
    # What Secrets Manager may generate (letters and digits) is a key the signer accepts.
    SigningKeys.parse("aZ09" * (GENERATED_SECRET_CHARACTERS // 4))
    assert default.raw["Outputs"]["WebhookSigningSecretArn"]["Value"] == {
        "Ref": default.logical_id(default.stack.webhooks.secret)}


def test_the_function_is_configured_for_its_queue_secret_dlq_and_this_vpc(default: Any) -> None:
    hooks = default.stack.webhooks
    function = default.raw["Resources"][default.logical_id(hooks.function)]["Properties"]
    assert function["Handler"] == WEBHOOKS_HANDLER
    assert function["Timeout"] == retry.FUNCTION_TIMEOUT_SECONDS
    assert "VpcConfig" not in function  # outside any VPC today...
    variables = function["Environment"]["Variables"]
    assert variables[env_var("webhook_secret_arn")] == {"Ref": default.logical_id(hooks.secret)}
    assert variables[env_var("webhook_dlq_url")] == {"Ref": default.logical_id(hooks.dead_letter_queue)}
    # ...and this VPC's range refused anyway, http and loopback never allowed in the cloud.
    assert variables[env_var("webhook_blocked_cidrs")] == {
        "Fn::GetAtt": [default.logical_id(default.stack.network.vpc), "CidrBlock"]}
    assert variables[env_var("webhook_allow_local")] == "false"
    default.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "EventSourceArn": _arn(default, hooks.queue), "BatchSize": retry.BATCH_SIZE,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": Match.any_value()}})


def test_the_function_may_read_job_records_the_secret_and_its_queues_only(default: Any) -> None:
    hooks = default.stack.webhooks
    statements = default.role_statements(hooks.handler.role)
    granted = {}
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            granted[action] = statement["Resource"]
    table = _arn(default, default.stack.storage.table)
    queue = _arn(default, hooks.queue)
    assert granted == {
        "dynamodb:BatchGetItem": table,
        "secretsmanager:GetSecretValue": {"Ref": default.logical_id(hooks.secret)},
        "sqs:SendMessage": _arn(default, hooks.dead_letter_queue),
        "sqs:ReceiveMessage": queue, "sqs:DeleteMessage": queue, "sqs:ChangeMessageVisibility": queue,
        "sqs:GetQueueAttributes": queue, "sqs:GetQueueUrl": queue,
        "logs:CreateLogStream": _arn(default, hooks.handler.log_group),
        "logs:PutLogEvents": _arn(default, hooks.handler.log_group),
        "xray:PutTraceSegments": "*", "xray:PutTelemetryRecords": "*",
    }
    role = default.raw["Resources"][default.logical_id(hooks.handler.role)]["Properties"]
    assert "ManagedPolicyArns" not in role
