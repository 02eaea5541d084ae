"""Parse the SQS messages that S3 event notifications arrive in.

The SQS record body is the S3 notification JSON: either {"Records": [...]} or, once when the
notification is configured, the `s3:TestEvent` message, which carries no object and is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, unquote_plus

TEST_EVENT = "s3:TestEvent"
OBJECT_CREATED = "ObjectCreated:"


class MalformedEventError(ValueError):
    """The message is not an S3 event notification; retrying cannot fix it (goes to the DLQ)."""


@dataclass(frozen=True, slots=True)
class UploadEvent:
    """One object version that S3 says was created."""

    bucket: str
    key: str  # decoded: S3 URL-encodes keys in notifications (spaces arrive as '+')
    size: int | None
    etag: str | None
    version_id: str | None
    event_name: str
    event_time: str = ""
    sequencer: str = ""


def parse_body(body: str) -> list[UploadEvent]:
    """The ObjectCreated records of one SQS message body; [] for the S3 test event."""
    try:
        message = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedEventError(f"SQS body is not JSON: {exc}") from exc
    if not isinstance(message, Mapping):
        raise MalformedEventError("SQS body is not a JSON object")
    if message.get("Event") == TEST_EVENT:
        return []
    records = message.get("Records")
    if not isinstance(records, list):
        raise MalformedEventError("SQS body has no S3 'Records' list")
    return [event for record in records if (event := parse_record(record)) is not None]


def event_body(upload: UploadEvent) -> str:
    """An S3 event notification message for `upload`, as S3 sends it to SQS (the sweeper re-drives an upload
    whose intake never finished with one): the inverse of `parse_body`."""
    obj: dict[str, Any] = {"key": quote_plus(upload.key, safe="/"), "size": upload.size, "eTag": upload.etag,
                           "sequencer": upload.sequencer or None}
    if upload.version_id:
        obj["versionId"] = upload.version_id
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": upload.event_name,
        "eventTime": upload.event_time, "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": upload.bucket},
                                                "object": {k: v for k, v in obj.items() if v is not None}}}]})


def parse_record(record: Mapping[str, Any]) -> UploadEvent | None:
    """One S3 event record; None for events that are not object creations."""
    name = str(record.get("eventName", ""))
    if not name.startswith(OBJECT_CREATED):
        return None
    try:
        s3 = record["s3"]
        bucket = s3["bucket"]["name"]
        obj = s3["object"]
        raw_key = obj["key"]
    except (KeyError, TypeError) as exc:
        raise MalformedEventError(f"S3 record lacks bucket or object key: {exc}") from exc
    size = obj.get("size")
    return UploadEvent(
        bucket=str(bucket),
        key=unquote_plus(str(raw_key)),
        size=int(size) if size is not None else None,
        etag=str(obj["eTag"]) if obj.get("eTag") else None,
        version_id=str(obj["versionId"]) if obj.get("versionId") else None,
        event_name=name,
        event_time=str(record.get("eventTime", "")),
        sequencer=str(obj.get("sequencer", "")),
    )
