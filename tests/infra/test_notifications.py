"""Notification topic (KMS with rotation), webhook subscriptions, and the Batch FAILED rule."""

from __future__ import annotations

from typing import Any

from common.contract import ATTR_EVENT_TYPE, EventType


def test_topics_are_encrypted_with_a_rotating_key(default: Any) -> None:
    key_id = default.logical_id(default.stack.notifications.key)
    assert default.raw["Resources"][key_id]["Properties"]["EnableKeyRotation"] is True
    topics = default.resources("AWS::SNS::Topic")
    assert len(topics) == 2  # notifications + alarms
    for topic in topics.values():
        assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    for policy in default.resources("AWS::SNS::TopicPolicy").values():
        (deny,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_notification_topic_signs_with_sha256(default: Any) -> None:
    topic = default.raw["Resources"][default.logical_id(default.stack.notifications.topic)]["Properties"]
    assert topic["SignatureVersion"] == "2"  # SHA256withRSA; receivers can refuse v1 (SHA1)


def _assert_this_accounts_alarms_only(condition: dict[str, Any]) -> None:
    assert condition["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    arn = condition["ArnLike"]["aws:SourceArn"]["Fn::Join"][1]
    assert arn == ["arn:", {"Ref": "AWS::Partition"}, ":cloudwatch:", {"Ref": "AWS::Region"}, ":",
                   {"Ref": "AWS::AccountId"}, ":alarm:*"]


def test_alarm_topic_key_lets_this_accounts_alarms_publish(default: Any) -> None:
    key = default.raw["Resources"][default.logical_id(default.stack.notifications.key)]["Properties"]
    (statement,) = [s for s in key["KeyPolicy"]["Statement"]
                    if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert set(statement["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    _assert_this_accounts_alarms_only(statement["Condition"])


def test_alarm_topic_policy_lets_this_accounts_alarms_publish(default: Any) -> None:
    """The TLS-only topic policy replaces SNS's default one, so CloudWatch needs an explicit allow."""
    topics = {default.logical_id(t): t for t in (default.stack.notifications.topic,
                                                 default.stack.monitoring.alarm_topic)}
    allows: dict[str, list[dict[str, Any]]] = {}
    for policy in default.resources("AWS::SNS::TopicPolicy").values():
        (topic,) = policy["Properties"]["Topics"]
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        allows[topic["Ref"]] = [s for s in statements if s["Effect"] == "Allow"]
    assert set(allows) == set(topics)
    assert allows[default.logical_id(default.stack.notifications.topic)] == []  # publishers use IAM (same account)
    (statement,) = allows[default.logical_id(default.stack.monitoring.alarm_topic)]
    assert statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert statement["Action"] == "sns:Publish"
    assert statement["Resource"] == {"Ref": default.logical_id(default.stack.monitoring.alarm_topic)}
    _assert_this_accounts_alarms_only(statement["Condition"])


def test_webhooks_subscribe_over_https_with_filter_policy_and_dead_letter_queue(default: Any, variant: Any) -> None:
    # The default stack's one subscription is the per-request delivery queue (test_webhook_delivery.py).
    assert [s["Properties"]["Protocol"] for s in default.resources("AWS::SNS::Subscription").values()] == ["sqs"]
    subscriptions = {s["Properties"]["Endpoint"]: s["Properties"]
                     for s in variant.resources("AWS::SNS::Subscription").values()
                     if s["Properties"]["Protocol"] == "https"}
    hooks = {hook.url: hook for hook in variant.config.webhooks}
    assert set(subscriptions) == set(hooks)
    topic = {"Ref": variant.logical_id(variant.stack.notifications.topic)}
    for url, subscription in subscriptions.items():
        assert subscription["TopicArn"] == topic
        assert subscription.get("RawMessageDelivery") in (None, False)  # receivers verify the signed envelope
        dlq = variant.stack.notifications.webhook_dlqs[url]
        assert subscription["RedrivePolicy"] == {"deadLetterTargetArn": {
            "Fn::GetAtt": [variant.logical_id(dlq), "Arn"]}}
        retry = subscription["DeliveryPolicy"]["healthyRetryPolicy"]
        assert retry["numRetries"] >= 10 and retry["backoffFunction"].lower() == "exponential"
        expected = hooks[url].filter_policy
        assert subscription.get("FilterPolicy") == (dict(expected) if expected else None)
    succeeded_only = [s for s in subscriptions.values() if s.get("FilterPolicy")]
    assert succeeded_only[0]["FilterPolicy"] == {ATTR_EVENT_TYPE: [str(EventType.SUCCEEDED)]}


def test_webhook_dead_letter_queues_accept_only_this_topic(variant: Any) -> None:
    topic = {"Ref": variant.logical_id(variant.stack.notifications.topic)}
    for dlq in variant.stack.notifications.webhook_dlqs.values():
        dlq_id = variant.logical_id(dlq)
        assert variant.raw["Resources"][dlq_id]["Properties"]["SqsManagedSseEnabled"] is True
        (policy,) = [p for p in variant.resources("AWS::SQS::QueuePolicy").values()
                     if {"Ref": dlq_id} in p["Properties"]["Queues"]]
        (allow,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
        assert allow["Principal"] == {"Service": "sns.amazonaws.com"}
        assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": topic}}


def test_the_work_dlq_drains_into_the_notifier(default: Any) -> None:
    work, notifier = default.stack.work, default.stack.notifier
    default.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "EventSourceArn": {"Fn::GetAtt": [default.logical_id(work.dead_letter_queue), "Arn"]},
        "FunctionName": {"Ref": default.logical_id(notifier.function)},
        "FunctionResponseTypes": ["ReportBatchItemFailures"]})
    queue = default.raw["Resources"][default.logical_id(work.queue)]["Properties"]
    # a backstop only: real attempts are counted on the job record
    assert queue["RedrivePolicy"]["maxReceiveCount"] == default.config.settings.max_receives
    assert queue["VisibilityTimeout"] == default.config.settings.work_visibility_seconds
    dlq = default.raw["Resources"][default.logical_id(work.dead_letter_queue)]["Properties"]
    notifier_timeout = default.raw["Resources"][default.logical_id(notifier.function)]["Properties"]["Timeout"]
    assert dlq["VisibilityTimeout"] >= 6 * notifier_timeout  # finding 11: was SQS's default 30 s = the timeout


def test_the_scaler_runs_every_minute_and_when_a_worker_job_of_this_queue_ends(default: Any) -> None:
    scaler = default.stack.scaler
    schedule = default.raw["Resources"][default.logical_id(scaler.schedule)]["Properties"]
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    ended = default.raw["Resources"][default.logical_id(scaler.worker_ended)]["Properties"]
    assert ended["EventPattern"] == {
        "source": ["aws.batch"],
        "detail-type": ["Batch Job State Change"],
        "detail": {"status": ["SUCCEEDED", "FAILED"],
                   "jobQueue": [{"Fn::GetAtt": [default.logical_id(default.stack.gpu.job_queue), "JobQueueArn"]}]},
    }
    for rule in (schedule, ended):
        (target,) = rule["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [default.logical_id(scaler.function), "Arn"]}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [default.logical_id(scaler.dead_letter_queue),
                                                                     "Arn"]}}
