"""Tests read what was published to the SNS topic through an SQS queue subscribed to it."""

from __future__ import annotations

import json
from typing import Any

from local_stack.resources import create_queue


def capture_topic(sns: Any, sqs: Any, *, topic_name: str = "upscaler-events",
                  queue_name: str = "capture") -> tuple[str, str]:
    """Create the topic and a queue subscribed to it; (topic ARN, queue URL)."""
    topic_arn = str(sns.create_topic(Name=topic_name)["TopicArn"])
    queue_url, queue_arn = create_queue(sqs, queue_name)
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return topic_arn, queue_url


def drain_notifications(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every SNS envelope delivered so far (removed from the queue), each with its parsed `payload`."""
    found: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            envelope = json.loads(message["Body"])
            envelope["payload"] = json.loads(envelope["Message"])
            found.append(envelope)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return found
