"""The local SQS event source mapping, with an in-process fake handler, against the emulator."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import pytest

from common import aws
from local_stack.event_source import MappingConfig, SqsEventSourceMapping
from local_stack.resources import create_queue
from local_stack.sqs_events import failed_message_ids


def test_partial_batch_response_semantics() -> None:
    ids = ["a", "b", "c"]
    assert failed_message_ids(None, ids) == set()
    assert failed_message_ids({"batchItemFailures": []}, ids) == set()
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "b"}]}, ids) == {"b"}
    # An identifier that is not in the batch (or empty) fails the whole batch, as in AWS.
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, ids) == set(ids)
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": ""}]}, ids) == set(ids)


class FakeHandler:
    """Fails records whose body is 'bad'; raises (whole batch fails) once when told to."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.raise_next = False
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.events.append(event)
            if self.raise_next:
                self.raise_next = False
                raise RuntimeError("boom")
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]
                                      if r["body"] == "bad"]}

    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for e in self.events for r in e["Records"]]


@pytest.fixture()
def queues(emulator_settings: Any, request: pytest.FixtureRequest) -> dict[str, str]:
    sqs = aws.client("sqs", emulator_settings)
    name = f"{emulator_settings.app_name}-{request.node.name[:30]}"
    dlq_url, dlq_arn = create_queue(sqs, f"{name}-dlq")
    url, arn = create_queue(sqs, name, {
        "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
    })
    return {"url": url, "arn": arn, "dlq_url": dlq_url}


def _depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_batches_partial_failures_and_redrive(emulator_settings: Any, queues: dict[str, str], wait: Any) -> None:
    sqs = aws.client("sqs", emulator_settings)
    for body in ("good-1", "bad", "good-2"):
        sqs.send_message(QueueUrl=queues["url"], MessageBody=body,
                         MessageAttributes={"origin": {"DataType": "String", "StringValue": body}})
    handler = FakeHandler()
    mapping = SqsEventSourceMapping(
        sqs=sqs, queue_url=queues["url"], queue_arn=queues["arn"], region=emulator_settings.region,
        invoke=handler, config=MappingConfig(batch_size=10, batching_window_seconds=0.5, pollers=1),
    )
    mapping.start()
    try:
        # 'bad' is received twice (maxReceiveCount=2), then SQS moves it to the DLQ.
        wait(lambda: _depth(sqs, queues["dlq_url"]) == 1, timeout=20, what="the failed message in the DLQ")
    finally:
        mapping.stop()

    records = handler.records()
    by_body: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_body.setdefault(record["body"], []).append(record)
    assert len(by_body["good-1"]) == 1 and len(by_body["good-2"]) == 1  # deleted after success
    assert [r["attributes"]["ApproximateReceiveCount"] for r in by_body["bad"]] == ["1", "2"]
    assert _depth(sqs, queues["url"]) == 0
    dead = sqs.receive_message(QueueUrl=queues["dlq_url"])["Messages"][0]
    assert dead["Body"] == "bad"
    # The first batch held all three messages: the batching window collected them into one event.
    assert len(handler.events[0]["Records"]) == 3

    record = by_body["good-1"][0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queues["arn"]
    assert record["awsRegion"] == emulator_settings.region
    assert record["md5OfBody"] == hashlib.md5(b"good-1").hexdigest()
    assert record["receiptHandle"]
    assert {"ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(
        record["attributes"])
    assert record["messageAttributes"]["origin"] == {
        "stringValue": "good-1", "stringListValues": [], "binaryListValues": [], "dataType": "String"}
    assert mapping.stats.deleted == 2 and mapping.stats.failed == 2


def test_a_raising_invocation_returns_the_whole_batch(emulator_settings: Any, queues: dict[str, str],
                                                      wait: Any) -> None:
    sqs = aws.client("sqs", emulator_settings)
    sqs.send_message(QueueUrl=queues["url"], MessageBody="good")
    handler = FakeHandler()
    handler.raise_next = True
    mapping = SqsEventSourceMapping(
        sqs=sqs, queue_url=queues["url"], queue_arn=queues["arn"], region=emulator_settings.region,
        invoke=handler, config=MappingConfig(batch_size=10, pollers=1),
    )
    mapping.start()
    try:
        wait(lambda: mapping.stats.deleted == 1, timeout=15, what="the retried message to succeed")
    finally:
        mapping.stop()
    assert [r["attributes"]["ApproximateReceiveCount"] for r in handler.records()] == ["1", "2"]
    assert mapping.stats.invocation_errors == 1
    assert _depth(sqs, queues["dlq_url"]) == 0
