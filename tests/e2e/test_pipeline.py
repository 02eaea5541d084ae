"""End to end through the local stack: real intake Lambda, real worker processes, real notifier, webhooks.

One stack for the module; small images and the fast animevideov3 model (x-amz-meta-model).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import pytest
from PIL import Image

from common import aws
from common.contract import JobState
from common.jobs import JobStore, upload_job_id
from local_stack.receiver import WebhookReceiver
from local_stack.stack import LocalStack, LocalStackConfig

pytestmark = pytest.mark.slow

FAST_MODEL = {"model": "animevideov3"}


@pytest.fixture(scope="module")
def stack(receiver: WebhookReceiver, quick: dict[str, Any]) -> Iterator[LocalStack]:
    from gpu_batch.engine.models import ensure_model

    for model in ("animevideov3", "x4plus"):
        ensure_model(model)  # built once and cached; workers must not race to build it
    config = LocalStackConfig(
        workers=2,
        webhooks=(receiver.url,),
        **quick,
    )
    with LocalStack(config) as running:
        assert running.webhook_subscriptions[0].confirmed.wait(10), "webhook not confirmed"
        yield running


def _image(fmt: str, size: tuple[int, int], mode: str = "RGB") -> bytes:
    img = Image.new(mode, size)
    img.putdata([((x * 7) % 256, (y * 5) % 256, (x + y) % 256, 255 if (x // 4) % 2 else 90)[: len(mode)]
                 for y in range(size[1]) for x in range(size[0])])
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _upload(stack: LocalStack, name: str, body: bytes, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    s = stack.settings
    assert s is not None
    key = f"{s.upload_prefix}{name}"
    put = aws.client("s3", s).put_object(Bucket=s.input_bucket, Key=key, Body=body, Metadata=metadata or {})
    job_id = upload_job_id(s.input_bucket, key, put.get("VersionId"), put.get("ETag"), len(body))
    return {"key": key, "job_id": job_id, "version": put.get("VersionId"), "etag": put["ETag"], "size": len(body)}


def _store(stack: LocalStack) -> JobStore:
    assert stack.settings is not None
    return JobStore(dynamodb_client=aws.client("dynamodb", stack.settings), table_name=stack.settings.jobs_table)


def test_jpeg_and_rgba_png_are_upscaled(stack: LocalStack, receiver: WebhookReceiver) -> None:
    jpeg = _upload(stack, "photo one.jpg", _image("JPEG", (40, 32)), FAST_MODEL)
    png = _upload(stack, "logo.png", _image("PNG", (24, 20), "RGBA"), FAST_MODEL)
    for upload, size in ((jpeg, (40, 32)), (png, (24, 20))):
        [got] = receiver.wait_for(lambda p, j=upload["job_id"]: p["job_id"] == j, timeout=90)
        payload = got.payload
        assert payload["event_type"] == "upscale.succeeded", payload
        assert payload["model"] == "animevideov3"
        assert (payload["input"]["width"], payload["input"]["height"]) == size
        assert (payload["output"]["width"], payload["output"]["height"]) == (size[0] * 4, size[1] * 4)
        body = aws.client("s3", stack.settings).get_object(
            Bucket=payload["output"]["bucket"], Key=payload["output"]["key"])["Body"].read()
        with Image.open(io.BytesIO(body)) as out:
            assert out.size == (size[0] * 4, size[1] * 4)
            if upload is png:
                assert out.format == "PNG" and out.mode == "RGBA"  # alpha survives
            else:
                assert out.format == "JPEG"
        assert _store(stack).get(upload["job_id"]).state is JobState.SUCCEEDED


def test_corrupt_file_is_rejected_and_moved(stack: LocalStack, receiver: WebhookReceiver) -> None:
    upload = _upload(stack, "broken.jpg", b"\xff\xd8\xff\xe0 this is not really a JPEG" * 20)
    [got] = receiver.wait_for(lambda p: p["job_id"] == upload["job_id"], timeout=60)
    assert got.payload["event_type"] == "upscale.rejected"
    assert got.payload["error"]["code"]
    s = stack.settings
    keys = [o["Key"] for o in aws.client("s3", s).list_objects_v2(Bucket=s.input_bucket).get("Contents", [])]
    assert upload["key"] not in keys
    assert any(k.startswith(s.rejected_prefix) and k.endswith("broken.jpg") for k in keys), keys
    assert "attempts" not in _store(stack).get(upload["job_id"]).attributes  # no GPU time spent


def test_the_same_object_notified_twice_makes_one_job(stack: LocalStack, receiver: WebhookReceiver,
                                                      wait: Any) -> None:
    upload = _upload(stack, "twice.jpg", _image("JPEG", (32, 24)), FAST_MODEL)
    # S3 delivers at least once: send the same object's event again, while the first is in flight.
    s = stack.settings
    record = {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": s.region,
              "eventName": "ObjectCreated:Put",
              "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": s.input_bucket},
                     "object": {"key": quote_plus(upload["key"], safe="/"), "size": upload["size"],
                                "eTag": upload["etag"].strip('"'), "versionId": upload["version"]}}}
    before = stack.intake.stats.records
    aws.client("sqs", s).send_message(QueueUrl=stack.resources.intake_queue_url,
                                      MessageBody=json.dumps({"Records": [record]}))
    receiver.wait_for(lambda p: p["job_id"] == upload["job_id"], timeout=60)
    wait(lambda: stack.intake.stats.records >= before + 2, timeout=30, what="both events processed")
    assert len(receiver.for_job(upload["job_id"])) == 1
    assert _store(stack).get(upload["job_id"]).attributes["attempts"] == 1  # the image was upscaled once
    assert stack.dlq_depth() == 0


def test_webhook_down_for_a_while_gets_the_notification_later(stack: LocalStack, wait: Any) -> None:
    first = WebhookReceiver().start()
    port = int(first.url.rsplit(":", 1)[1].split("/")[0])
    sub = stack.subscribe_webhook(first.url, {"event_type": ["upscale.succeeded"]})
    try:
        assert sub.confirmed.wait(10)
        first.stop()  # down
        upload = _upload(stack, "while-down.jpg", _image("JPEG", (16, 16)), FAST_MODEL)
        wait(lambda: sub.failed_attempts >= 2, timeout=60, what="failed deliveries to the down endpoint")
        back = WebhookReceiver(port=port).start()
        try:
            [got] = back.wait_for(lambda p: p["job_id"] == upload["job_id"], timeout=30)
            assert got.payload["event_type"] == "upscale.succeeded"
        finally:
            back.stop()
    finally:
        stack.webhooks.unsubscribe(sub.arn)
