"""Publishing one notification to the SNS topic (common.lifecycle decides when, and marks it sent)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.contract import message_attributes, notification_json, validate_notification


class Notifier:
    def __init__(self, *, sns_client: Any, topic_arn: str, upload_prefix: str) -> None:
        self._sns = sns_client
        self._topic_arn = topic_arn
        self._upload_prefix = upload_prefix

    def publish_payload(self, payload: Mapping[str, Any]) -> str:
        """Validate against the published schema, then publish. Returns the SNS message id."""
        validate_notification(payload)  # a contract break is our bug: fail loudly, never send it (cheap)
        event_type = str(payload["event_type"])
        resp = self._sns.publish(
            TopicArn=self._topic_arn,
            Subject=event_type,
            Message=notification_json(payload),
            MessageAttributes=message_attributes(event_type, self._upload_prefix, str(payload["event_id"])),
        )
        return str(resp["MessageId"])
