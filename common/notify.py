"""Publishing the one terminal notification of a job to the SNS topic."""

from __future__ import annotations

from typing import Any

from common.contract import Notification, validate_notification


class Notifier:
    def __init__(self, *, sns_client: Any, topic_arn: str, upload_prefix: str) -> None:
        self._sns = sns_client
        self._topic_arn = topic_arn
        self._upload_prefix = upload_prefix

    def publish(self, notification: Notification) -> str:
        """Validate against the published schema, then publish. Returns the SNS message id."""
        payload = notification.to_dict()
        validate_notification(payload)  # a contract break is our bug: fail loudly, never send it
        resp = self._sns.publish(
            TopicArn=self._topic_arn,
            Subject=str(notification.event_type),
            Message=notification.to_json(),
            MessageAttributes={
                name: {"DataType": attr["DataType"], "StringValue": attr["StringValue"]}
                for name, attr in notification.message_attributes(self._upload_prefix).items()
            },
        )
        return str(resp["MessageId"])
