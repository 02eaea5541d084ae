"""Output upload (one PUT or one completed multipart upload), signal handling, error classification."""

from __future__ import annotations

import os
import signal

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from common.contract import FailureCode
from gpu_batch.worker.errors import JobInterrupted
from gpu_batch.worker.item import classify
from gpu_batch.worker.runtime import StopSignal, critical_section
from gpu_batch.worker.storage import metadata_value, upload_output

MIB = 1024 * 1024


def test_small_output_is_one_put(world):
    version = upload_output(world.s3, bucket=world.settings.output_bucket, key="outputs/small.png", data=b"x" * 100,
                            content_type="image/png", metadata={"model": "x4plus", "empty": None})
    head = world.s3.head_object(Bucket=world.settings.output_bucket, Key="outputs/small.png")
    assert head["VersionId"] == version and head["ContentType"] == "image/png"
    assert head["Metadata"] == {"model": "x4plus"}
    assert "-" not in head["ETag"]  # not a multipart ETag


def test_big_output_is_one_completed_multipart_upload(world):
    data = os.urandom(11 * MIB)
    upload_output(world.s3, bucket=world.settings.output_bucket, key="outputs/big.png", data=data,
                  content_type="image/png", metadata={"model": "x4plus"}, multipart_threshold=MIB,
                  part_size=5 * MIB)
    obj = world.s3.get_object(Bucket=world.settings.output_bucket, Key="outputs/big.png")
    assert obj["ETag"].strip('"').endswith("-3")
    assert obj["ContentType"] == "image/png" and obj["Metadata"] == {"model": "x4plus"}
    assert obj["Body"].read() == data


def test_failed_multipart_upload_is_aborted_and_leaves_nothing(world):
    class FailingParts:
        def __init__(self, s3):
            self._s3 = s3

        def upload_part(self, **kwargs):
            if kwargs["PartNumber"] == 2:
                raise ClientError({"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
                                  "UploadPart")
            return self._s3.upload_part(**kwargs)

        def __getattr__(self, name):
            return getattr(self._s3, name)

    bucket = world.settings.output_bucket
    with pytest.raises(ClientError):
        upload_output(FailingParts(world.s3), bucket=bucket, key="outputs/partial.png", data=os.urandom(11 * MIB),
                      content_type="image/png", metadata={}, multipart_threshold=MIB, part_size=5 * MIB)
    assert world.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "Contents" not in world.s3.list_objects_v2(Bucket=bucket)


def test_metadata_values_are_ascii_and_bounded():
    assert metadata_value("uploads/é x.png") == "uploads/%C3%A9 x.png"
    assert metadata_value(2.0) == "2.0"
    assert len(metadata_value("k" * 5000)) == 1024


def test_sigterm_stops_the_loop_and_interrupts_only_outside_the_critical_section():
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stop = StopSignal()
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # idle: no item in hand, nothing to interrupt
        assert stop.requested.is_set()
        stop.busy = True
        with critical_section():
            os.kill(os.getpid(), signal.SIGTERM)  # handled now, but must not interrupt the terminal write
        with pytest.raises(JobInterrupted):
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


@pytest.mark.parametrize("exc, code, retryable", [
    (ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject"),
     FailureCode.STORAGE_ERROR, True),
    (ClientError({"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "Publish"),
     FailureCode.STORAGE_ERROR, True),
    (ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject"),
     FailureCode.STORAGE_ERROR, False),
    (EndpointConnectionError(endpoint_url="https://s3.amazonaws.com"), FailureCode.STORAGE_ERROR, True),
    (ValueError("bug"), FailureCode.INTERNAL_ERROR, False),
])
def test_classify(exc, code, retryable):
    failure = classify(exc)
    assert (failure.code, failure.retryable) == (code, retryable)
