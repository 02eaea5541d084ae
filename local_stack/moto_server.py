"""`python -m local_stack.moto_server`: moto's server with its S3 event notifications made S3-shaped.

moto (5.x) leaves `versionId` and `sequencer` out of S3 event records and percent-encodes '/' in
keys. Real S3 sends both fields for versioned buckets and keeps '/' (spaces become '+'). The intake
derives the job id from the object version, so without this shim a local job would be keyed
differently from the same upload in AWS. Everything else is moto as shipped.
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


def main() -> None:
    _patch_s3_events()
    from moto.server import main as moto_main

    moto_main()


if __name__ == "__main__":
    main()
