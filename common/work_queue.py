"""The SQS work queue: one message per accepted upload, drained by the GPU workers.

SQS's visibility timeout is the lease of a delivery: a worker renews it while it works on an image; a
worker that dies lets it lapse, and the item comes back for another worker. A worker that gives an item back
(SIGTERM, a transient failure's retry) sends a fresh copy and deletes the one it holds: ApproximateReceiveCount
counts every receive, so give-backs would otherwise walk a healthy item to the DLQ (SQS Developer Guide,
"Using dead-letter queues"). The redrive policy (`settings.max_receives`) is only a backstop; real attempts are
counted on the job record (common.lifecycle).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from common.contract import WorkItem

log = logging.getLogger(__name__)

# A week: items outlive an outage of GPU capacity. Half of the DLQ's 14 days (the most SQS keeps): SQS
# expires a message by its original enqueue time, also in the DLQ, so an item that reaches the DLQ late
# still stays there a week for the notifier
# (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html).
WORK_RETENTION_SECONDS = 7 * 24 * 3600
MAX_VISIBILITY_SECONDS = 43_200  # SQS: 12 hours from the receive
MAX_DELAY_SECONDS = 900  # SQS: a message's DelaySeconds
BATCH_LIMIT = 10  # SQS batch actions take at most 10 entries


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received message: the item's JSON, its receipt handle, and how many times SQS has delivered it."""

    body: str
    receipt_handle: str
    message_id: str
    receive_count: int


class WorkQueue:
    def __init__(self, *, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self.url = queue_url

    def send(self, item: WorkItem, *, delay_seconds: int = 0) -> str:
        return self.send_body(item.to_json(), delay_seconds=delay_seconds)

    def send_body(self, body: str, *, delay_seconds: int = 0) -> str:
        delay = max(0, min(int(delay_seconds), MAX_DELAY_SECONDS))
        return str(self._sqs.send_message(QueueUrl=self.url, MessageBody=body, DelaySeconds=delay)["MessageId"])

    def receive(self, *, wait_seconds: int, visibility_seconds: int) -> Delivery | None:
        """At most one delivery (a worker works on one image at a time), long-polling up to `wait_seconds`."""
        messages = self._sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=1, WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_seconds, MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        if not messages:
            return None
        message = messages[0]
        return Delivery(body=str(message["Body"]), receipt_handle=str(message["ReceiptHandle"]),
                        message_id=str(message["MessageId"]),
                        receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)))

    def delete(self, delivery: Delivery) -> None:
        self._sqs.delete_message(QueueUrl=self.url, ReceiptHandle=delivery.receipt_handle)

    def hide(self, delivery: Delivery, seconds: int) -> None:
        """Renew (or shorten: 0 = visible now) the delivery's visibility."""
        self._sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=delivery.receipt_handle,
                                            VisibilityTimeout=max(0, min(int(seconds), MAX_VISIBILITY_SECONDS)))

    def hide_many(self, deliveries: Sequence[Delivery], seconds: int) -> list[Delivery]:
        """Renew the visibility of several deliveries (batches of 10). Returns those SQS refused (e.g. a stale
        receipt handle: a receipt handle dies when its visibility timeout expires)."""
        refused: list[Delivery] = []
        for start in range(0, len(deliveries), BATCH_LIMIT):
            chunk = {str(i): d for i, d in enumerate(deliveries[start:start + BATCH_LIMIT])}
            resp = self._sqs.change_message_visibility_batch(QueueUrl=self.url, Entries=[
                {"Id": i, "ReceiptHandle": d.receipt_handle,
                 "VisibilityTimeout": max(0, min(int(seconds), MAX_VISIBILITY_SECONDS))} for i, d in chunk.items()])
            refused.extend(chunk[str(f["Id"])] for f in resp.get("Failed", []))
        return refused

    def give_back(self, delivery: Delivery, *, delay_seconds: int = 0) -> None:
        """Put the item back for another delivery without burning a receive: a fresh copy (after `delay_seconds`),
        then the held one deleted. If the copy cannot be sent, the held one is made visible instead; if the
        delete fails, a duplicate copy remains, which the claim makes harmless."""
        try:
            self.send_body(delivery.body, delay_seconds=delay_seconds)
        except (ClientError, BotoCoreError):
            log.warning("could not send a fresh copy of the item; making the held one visible", exc_info=True)
            self.hide(delivery, delay_seconds)
            return
        self.delete(delivery)

    def depth(self) -> int:
        """Items waiting plus items being worked on (approximate, as SQS reports them)."""
        attrs = self._sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
