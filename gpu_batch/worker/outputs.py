"""The newest upload of a key owns its output: `outputs/<key>` never ends up holding an older version's result.

Two versions of one upload key can be upscaled at once and finish in any order (different models, a slow
worker, a retry). Each output object records which input version made it (`source-key`, `source-sequencer`:
the S3 event's sequencer, which orders the events of one key). A worker writes its output only with an S3
conditional write against the object it has just looked at (If-Match on its ETag, or If-None-Match when there
is none), and only if that object came from an older input version; a newer one there means this version was
superseded. An output key depends on the output format (`a.jpg` holding PNG bytes becomes `outputs/a.png`),
so the other format names of the same key are looked at too, after the write: every writer removes the older
versions' outputs it finds and, if it finds a newer one, its own, so whichever of two writers looks last
leaves only the newest (S3 conditional writes and deletes: "Add preconditions to S3 operations with
conditional requests", Amazon S3 User Guide).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from common.contract import OutputFormat, WorkItem
from common.formats import EXTENSIONS

from .storage import metadata_value, upload_output

log = logging.getLogger(__name__)

SOURCE_KEY = "source-key"
SOURCE_SEQUENCER = "source-sequencer"
WRITE_TRIES = 5  # a conditional write that loses to a concurrent writer looks again this many times


@dataclass(frozen=True, slots=True)
class Placed:
    version: str | None


@dataclass(frozen=True, slots=True)
class Superseded:
    newer_key: str  # the output key the newer version wrote


def sequencer_newer(mine: str | None, theirs: str | None) -> bool | None:
    """Whether `theirs` comes after `mine` for the same key: S3 sequencers compare as hex strings after the
    shorter is left-padded with zeros (Amazon S3 User Guide, "Event message structure"). None: unknown."""
    if not mine or not theirs:
        return None
    width = max(len(mine), len(theirs))
    a, b = mine.upper().rjust(width, "0"), theirs.upper().rjust(width, "0")
    return None if a == b else b > a


def place_output(s3: Any, item: WorkItem, *, data: bytes, content_type: str,
                 metadata: Mapping[str, Any]) -> Placed | Superseded:
    """Write the output unless a newer input version of the same key already owns it."""
    meta = {**metadata, SOURCE_KEY: item.input_key, SOURCE_SEQUENCER: item.input_sequencer}
    for _ in range(WRITE_TRIES):
        current = _head(s3, item.output_bucket, item.output_key)
        if current is not None and _newer(item, current):
            return Superseded(item.output_key)
        condition = {"IfMatch": current["ETag"]} if current is not None else {"IfNoneMatch": "*"}
        try:
            version = upload_output(s3, bucket=item.output_bucket, key=item.output_key, data=data,
                                    content_type=content_type, metadata=meta, condition=condition)
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                continue  # someone wrote it between our look and our write: look again
            raise
        etag = _head(s3, item.output_bucket, item.output_key)
        newer = _settle_siblings(s3, item)
        if newer is not None:
            if etag is not None and _is_ours(item, etag):
                _delete_if(s3, item.output_bucket, item.output_key, etag["ETag"])
            return Superseded(newer)
        return Placed(version)
    raise RuntimeError(f"could not write s3://{item.output_bucket}/{item.output_key}: it kept changing")


def _settle_siblings(s3: Any, item: WorkItem) -> str | None:
    """Remove the outputs an older version of this input key wrote under another format's name; return the key
    of a newer version's output if there is one."""
    newer: str | None = None
    for key in sibling_keys(item.output_key, item.output_format):
        other = _head(s3, item.output_bucket, key)
        if other is None or metadata_value(item.input_key) != other.get("Metadata", {}).get(SOURCE_KEY):
            continue
        order = sequencer_newer(item.input_sequencer, other.get("Metadata", {}).get(SOURCE_SEQUENCER))
        if order is True:
            newer = key
        elif order is False:
            _delete_if(s3, item.output_bucket, key, other["ETag"])
    return newer


def sibling_keys(output_key: str, output_format: OutputFormat) -> list[str]:
    """The same output name with every other format's extension."""
    suffix = EXTENSIONS[output_format]
    stem = output_key[: -len(suffix)] if output_key.endswith(suffix) else output_key
    return [stem + ext for fmt, ext in EXTENSIONS.items() if fmt is not output_format]


def _newer(item: WorkItem, current: Mapping[str, Any]) -> bool:
    meta = current.get("Metadata", {})
    return meta.get(SOURCE_KEY) == metadata_value(item.input_key) \
        and sequencer_newer(item.input_sequencer, meta.get(SOURCE_SEQUENCER)) is True


def _is_ours(item: WorkItem, head: Mapping[str, Any]) -> bool:
    meta = head.get("Metadata", {})
    return meta.get(SOURCE_KEY) == metadata_value(item.input_key) \
        and meta.get(SOURCE_SEQUENCER) == (item.input_sequencer or None)


def _head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return dict(s3.head_object(Bucket=bucket, Key=key))
    except ClientError as exc:
        if _code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _delete_if(s3: Any, bucket: str, key: str, etag: str) -> None:
    """Delete (a delete marker: the bucket is versioned) only the object we looked at."""
    try:
        s3.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
    except ClientError as exc:
        if _code(exc) not in ("PreconditionFailed", "412", "404", "NoSuchKey"):
            raise
        log.info("s3://%s/%s changed before it could be removed; its writer settles it", bucket, key)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
