"""Reading the input and writing the output so that a reader never sees a partial object."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from common.contract import WorkItem

from .errors import InputMissingError, is_missing_object

log = logging.getLogger(__name__)

# One PUT up to this size; above it one multipart upload (parts in parallel, completed atomically).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024  # S3 minimum is 5 MiB; 16 MiB keeps a 256 MP PNG under 100 parts
PART_CONCURRENCY = 4
_METADATA_VALUE_LIMIT = 1024  # S3 allows 2 KB of user metadata in total


def download_input(s3: Any, params: WorkItem) -> tuple[bytes, str | None]:
    """The input bytes (the exact version intake validated, when versioned) and its version id."""
    request: dict[str, Any] = {"Bucket": params.input_bucket, "Key": params.input_key}
    if params.input_version:
        request["VersionId"] = params.input_version
    try:
        resp = s3.get_object(**request)
    except ClientError as exc:
        if is_missing_object(exc):
            pinned = f" version {params.input_version}" if params.input_version else ""
            raise InputMissingError(f"{params.input_uri}{pinned} no longer exists") from exc
        raise
    with resp["Body"] as body:
        return body.read(), resp.get("VersionId")


def metadata_value(value: Any) -> str:
    """S3 user metadata travels in HTTP headers: ASCII only, so keys are percent-encoded."""
    text = quote(str(value), safe="/:=+,.-_ ")
    return text[:_METADATA_VALUE_LIMIT]


def upload_output(s3: Any, *, bucket: str, key: str, data: bytes, content_type: str,
                  metadata: Mapping[str, Any], condition: Mapping[str, str] | None = None,
                  multipart_threshold: int = MULTIPART_THRESHOLD, part_size: int = PART_SIZE) -> str | None:
    """Write `data` in one PUT, or one multipart upload that is completed or aborted. Returns the version id.

    `condition`: S3's IfMatch / IfNoneMatch, checked when the object becomes visible (the PUT, or the
    CompleteMultipartUpload); a failed precondition raises ClientError PreconditionFailed."""
    meta = {name: metadata_value(v) for name, v in metadata.items() if v is not None}
    if len(data) <= multipart_threshold:
        resp = s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, Metadata=meta,
                             **(condition or {}))
        return resp.get("VersionId")
    return _multipart_upload(s3, bucket=bucket, key=key, data=data, content_type=content_type,
                             metadata=meta, part_size=part_size, condition=condition or {})


def _multipart_upload(s3: Any, *, bucket: str, key: str, data: bytes, content_type: str,
                      metadata: dict[str, str], part_size: int, condition: Mapping[str, str]) -> str | None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type,
                                           Metadata=metadata)["UploadId"]
    view = memoryview(data)
    offsets = range(0, len(data), part_size)

    def upload_part(numbered: tuple[int, int]) -> dict[str, Any]:
        number, offset = numbered
        resp = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                              Body=bytes(view[offset:offset + part_size]))
        return {"PartNumber": number, "ETag": resp["ETag"]}

    try:
        with ThreadPoolExecutor(max_workers=PART_CONCURRENCY, thread_name_prefix="s3-part") as pool:
            parts = list(pool.map(upload_part, enumerate(offsets, start=1)))
        resp = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                             MultipartUpload={"Parts": parts}, **condition)
    except BaseException:
        # Nothing became visible; drop the parts so they are not billed (the bucket's lifecycle
        # rule for incomplete uploads is the backstop if this abort fails too).
        try:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:
            log.warning("could not abort multipart upload %s of s3://%s/%s", upload_id, bucket, key)
        raise
    return resp.get("VersionId")
