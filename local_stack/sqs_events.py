"""The event the Lambda service builds from a batch of SQS messages (the SQS event source shape)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The system attributes Lambda copies into `attributes` (it asks SQS for all of them).
_SYSTEM_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "AWSTraceHeader",
)


def lambda_record(message: Mapping[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """One `Records[]` entry from a ReceiveMessage result (AttributeNames=All, MessageAttributeNames=All)."""
    attributes = message.get("Attributes", {})
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {name: attributes[name] for name in _SYSTEM_ATTRIBUTES if name in attributes},
        "messageAttributes": {
            name: _message_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    # SQS API: StringValue/BinaryValue/DataType; Lambda event: camelCase, binary base64-encoded.
    import base64

    out: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": value["DataType"]}
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        raw = value["BinaryValue"]
        out["binaryValue"] = base64.b64encode(raw).decode() if isinstance(raw, bytes) else raw
    return out


def sqs_event(messages: Sequence[Mapping[str, Any]], *, queue_arn: str, region: str) -> dict[str, Any]:
    return {"Records": [lambda_record(m, queue_arn=queue_arn, region=region) for m in messages]}


def failed_message_ids(response: Any, batch_ids: Sequence[str]) -> set[str]:
    """Which messages of the batch failed, read from a partial batch response (ReportBatchItemFailures).

    As in AWS: a null/empty response or an empty list means all succeeded; an item identifier that is
    empty or not in the batch makes the whole batch fail.
    """
    if not response or not isinstance(response, Mapping):
        return set()
    failures = response.get("batchItemFailures") or []
    ids = set(batch_ids)
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, Mapping) else None
        if not identifier or identifier not in ids:
            return ids
        failed.add(identifier)
    return failed
