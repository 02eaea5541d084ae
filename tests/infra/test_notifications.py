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
        (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_alarm_topic_key_lets_cloudwatch_publish(default: Any) -> None:
    key = default.raw["Resources"][default.logical_id(default.stack.notifications.key)]["Properties"]
    (statement,) = [s for s in key["KeyPolicy"]["Statement"]
                    if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert set(statement["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}


def test_webhooks_subscribe_over_https_with_filter_policy_and_dead_letter_queue(default: Any, variant: Any) -> None:
    assert not default.resources("AWS::SNS::Subscription")
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


def test_failed_batch_jobs_of_this_queue_trigger_the_notifier(default: Any) -> None:
    notifier = default.stack.notifier
    rule = default.raw["Resources"][default.logical_id(notifier.rule)]["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.batch"],
        "detail-type": ["Batch Job State Change"],
        "detail": {"status": ["FAILED"],
                   "jobQueue": [{"Fn::GetAtt": [default.logical_id(default.stack.gpu.job_queue), "JobQueueArn"]}]},
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [default.logical_id(notifier.function), "Arn"]}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [default.logical_id(notifier.dead_letter_queue),
                                                                 "Arn"]}}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 10
    default.template.has_resource_properties("AWS::Lambda::Permission", {
        "Action": "lambda:InvokeFunction", "Principal": "events.amazonaws.com",
        "SourceArn": {"Fn::GetAtt": [default.logical_id(notifier.rule), "Arn"]}})
