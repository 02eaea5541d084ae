"""Publishing one notification to the SNS topic (common.lifecycle decides when, and marks it sent)."""

from __future__ import annotations

import json
from typing import Any

from common.contract import message_attributes, validate_notification


class Notifier:
    def __init__(self, *, sns_client: Any, topic_arn: str, upload_prefix: str) -> None:
        self._sns = sns_client
        self._topic_arn = topic_arn
        self._upload_prefix = upload_prefix

    def publish_text(self, text: str) -> str:
        """Publish a notification exactly as stored (every copy byte-identical). Returns the SNS message id.

        An SNS Publish can succeed while its response is lost, and standard topics have no idempotency key
        (SNS Publish API reference): a retry may make a second copy, identical to the first, with the same
        `event_id` in the body and in the message attributes for receivers to dedupe on."""
        payload = json.loads(text)
        validate_notification(payload)  # a contract break is our bug: fail loudly, never send it (cheap)
        event_type = str(payload["event_type"])
        resp = self._sns.publish(
            TopicArn=self._topic_arn,
            Subject=event_type,
            Message=text,
            MessageAttributes=message_attributes(event_type, self._upload_prefix, str(payload["event_id"])),
        )
        return str(resp["MessageId"])
