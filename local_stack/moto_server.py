"""`python -m local_stack.moto_server`: moto's server with its S3 event notifications made S3-shaped.

moto (5.x) leaves `versionId` and `sequencer` out of S3 event records and percent-encodes '/' in
keys. Real S3 sends both fields for versioned buckets and keeps '/' (spaces become '+'). The intake
derives the job id from the object version, so without this shim a local job would be keyed
differently from the same upload in AWS.

moto also checks a DynamoDB write's condition and applies it in two steps, so two concurrent requests
can both pass the same condition; in DynamoDB a conditional write is atomic, and the job lifecycle's
claims rely on it. `make_dynamodb_writes_atomic` serialises moto's item writes, as DynamoDB does.
Everything else is moto as shipped.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any
from urllib.parse import quote_plus

_sequence = itertools.count(1)
_sequence_lock = threading.Lock()


def _patch_s3_events() -> None:
    from moto.s3 import notifications

    original = notifications._get_s3_event

    def s3_shaped_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> dict[str, Any]:
        event = original(event_name, bucket, key, notification_id)
        for record in event["Records"]:
            obj = record["s3"]["object"]
            obj["key"] = quote_plus(key.name, safe="/")
            if bucket.is_versioned:
                obj["versionId"] = key.version_id
            with _sequence_lock:
                obj["sequencer"] = f"{next(_sequence):016X}"
        return event

    notifications._get_s3_event = s3_shaped_event


_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")
_write_lock = threading.RLock()


def make_dynamodb_writes_atomic() -> None:
    """Serialise moto's DynamoDB item writes (idempotent), so conditional writes are atomic as in AWS."""
    from moto.dynamodb.models import DynamoDBBackend

    for name in _WRITES:
        original = getattr(DynamoDBBackend, name)
        if getattr(original, "_atomic", False):
            continue

        def atomic(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with _write_lock:
                return __original(self, *args, **kwargs)

        atomic._atomic = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, atomic)


def main() -> None:
    _patch_s3_events()
    make_dynamodb_writes_atomic()
    from moto.server import main as moto_main

    moto_main()


if __name__ == "__main__":
    main()
