"""`python -m local_stack.moto_server`: moto's server with its S3 event notifications made S3-shaped.

moto (5.x) leaves `versionId` and `sequencer` out of S3 event records and percent-encodes '/' in
keys. Real S3 sends both fields for versioned buckets and keeps '/' (spaces become '+'). The intake
derives the job id from the object version, so without this shim a local job would be keyed
differently from the same upload in AWS.

moto also checks a DynamoDB write's condition and applies it in two steps, so two concurrent requests
can both pass the same condition; in DynamoDB a conditional write is atomic, and the job lifecycle's
claims rely on it. `make_dynamodb_writes_atomic` serialises moto's item writes, as DynamoDB does.
moto stores a POSTed (browser-based, presigned POST) upload without checking its signed policy;
`_enforce_post_policy` checks it as S3 does (local_stack.s3_post_policy), so the HTTP API's upload links
refuse a changed option or a larger file locally as they do in AWS.
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


def _enforce_post_policy() -> None:
    from datetime import UTC, datetime

    from moto.s3.responses import S3Response

    from local_stack.s3_post_policy import PostRefused, check_post
    from local_stack.stack import DUMMY_CREDENTIALS

    secrets = {DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"]: DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
    original = S3Response._bucket_response_post

    def checked(self: Any, request: Any, bucket_name: str) -> Any:
        form = dict(self.form_data.items()) if self.form_data else {}
        if any(name.lower() == "policy" for name in form):
            try:
                check_post(form, len(self.raw_body or b""), bucket=bucket_name, now=datetime.now(UTC),
                           secret_for=secrets.get)
            except PostRefused as refused:
                return refused.status, {"Content-Type": "application/xml"}, refused.xml()
        return original(self, request, bucket_name)

    S3Response._bucket_response_post = checked  # type: ignore[method-assign]


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
    _enforce_post_policy()
    make_dynamodb_writes_atomic()
    from moto.server import main as moto_main

    moto_main()


if __name__ == "__main__":
    main()
