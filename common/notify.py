"""Publishing the one terminal notification of a job to the SNS topic, durably.

The terminal notification is stored on the job record in the same conditional write that makes the
job terminal (`outbox_attributes`), with `notified = False`. Whoever won that write publishes it and
sets `notified = True`. If the publish fails, or the process dies in between, a later attempt (a Batch
retry of the worker, a retried notifier invocation, a redelivered intake message) finds the record
terminal but not notified and publishes the stored message (`deliver_pending`): the notification is
never lost, and is sent twice only if SNS accepted it but the `notified` write was lost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from common.contract import Notification, message_attributes, validate_notification
from common.jobs import JobRecord, JobStore

OUTBOX_MESSAGE = "notification"  # the terminal notification's JSON, written with the terminal state
OUTBOX_SENT = "notified"  # False until SNS accepted the message
OUTBOX_MESSAGE_ID = "notification_message_id"


class Notifier:
    def __init__(self, *, sns_client: Any, topic_arn: str, upload_prefix: str) -> None:
        self._sns = sns_client
        self._topic_arn = topic_arn
        self._upload_prefix = upload_prefix

    def publish(self, notification: Notification) -> str:
        """Validate against the published schema, then publish. Returns the SNS message id."""
        return self.publish_payload(notification.to_dict())

    def publish_payload(self, payload: Mapping[str, Any]) -> str:
        validate_notification(payload)  # a contract break is our bug: fail loudly, never send it
        event_type = str(payload["event_type"])
        resp = self._sns.publish(
            TopicArn=self._topic_arn,
            Subject=event_type,
            Message=json.dumps(payload, sort_keys=True, separators=(",", ":")),
            MessageAttributes=message_attributes(event_type, self._upload_prefix),
        )
        return str(resp["MessageId"])


def outbox_attributes(notification: Notification) -> dict[str, Any]:
    """Attributes to write with the terminal state so the notification survives a failed publish."""
    return {OUTBOX_MESSAGE: notification.to_json(), OUTBOX_SENT: False}


def pending_payload(record: JobRecord) -> dict[str, Any] | None:
    """The stored terminal notification of `record` if it has not been sent yet, else None."""
    attrs = record.attributes
    if record.state.is_terminal and attrs.get(OUTBOX_SENT) is False and attrs.get(OUTBOX_MESSAGE):
        return dict(json.loads(str(attrs[OUTBOX_MESSAGE])))
    return None


def has_pending_notification(record: JobRecord) -> bool:
    return pending_payload(record) is not None


def mark_sent(store: JobStore, job_id: str, message_id: str) -> None:
    store.update_attributes(job_id, {OUTBOX_SENT: True, OUTBOX_MESSAGE_ID: message_id})


def publish_and_mark(job_id: str, payload: Mapping[str, Any], *, notifier: Notifier, store: JobStore) -> str:
    """Publish a terminal notification this caller stored with its winning write, then mark it sent."""
    message_id = notifier.publish_payload(payload)
    mark_sent(store, job_id, message_id)
    return message_id


def deliver_pending(record: JobRecord, *, notifier: Notifier, store: JobStore) -> str | None:
    """Publish the stored terminal notification of `record` if it was not yet sent; its message id, or None."""
    payload = pending_payload(record)
    if payload is None:
        return None
    return publish_and_mark(record.job_id, payload, notifier=notifier, store=store)
