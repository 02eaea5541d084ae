"""The SQS work queue: one message per accepted upload, drained by the GPU workers.

SQS's visibility timeout is the lease of a delivery: a worker renews it while it works on an image; a
worker that dies lets it lapse, and the item comes back for another worker. After
`settings.max_attempts` deliveries the queue's redrive policy moves it to the work DLQ, where the
notifier gives it its one upscale.failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.contract import WorkItem

# A week: items outlive an outage of GPU capacity. Half of the DLQ's 14 days (the most SQS keeps): SQS
# expires a message by its original enqueue time, also in the DLQ, so an item that reaches the DLQ late
# still stays there a week for the notifier
# (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html).
WORK_RETENTION_SECONDS = 7 * 24 * 3600


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

    def send(self, item: WorkItem) -> str:
        return str(self._sqs.send_message(QueueUrl=self.url, MessageBody=item.to_json())["MessageId"])

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
                                            VisibilityTimeout=max(0, min(int(seconds), 43_200)))

    def depth(self) -> int:
        """Items waiting plus items being worked on (approximate, as SQS reports them)."""
        attrs = self._sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
