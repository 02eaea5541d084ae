"""HEIC and TIFF uploads end to end through the local stack: the stated output format arrives.

An iPhone-style HEIC (EXIF orientation 6) ends in `upscale.succeeded` with a JPEG output (HEIC is read,
never written); a 16-bit TIFF with x-amz-meta-format: avif becomes an AVIF. One stack for the module;
the fast animevideov3 model.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from common import aws
from common.heif import register_heif_opener
from common.jobs import dedupe_key, job_id_for
from local_stack.receiver import WebhookReceiver
from local_stack.stack import LocalStack, LocalStackConfig

pytestmark = pytest.mark.slow

FAST_MODEL = {"model": "animevideov3"}


@pytest.fixture(scope="module")
def stack(receiver: WebhookReceiver, quick: dict[str, Any]) -> Iterator[LocalStack]:
    from gpu_batch.engine.models import ensure_model

    ensure_model("animevideov3")  # built once and cached; workers must not race to build it
    config = LocalStackConfig(
        workers=1,
        webhooks=(receiver.url,),
        **quick,
    )
    with LocalStack(config) as running:
        assert running.webhook_subscriptions[0].confirmed.wait(10), "webhook not confirmed"
        yield running


def _upload(stack: LocalStack, name: str, body: bytes, metadata: dict[str, str]) -> str:
    s = stack.settings
    assert s is not None
    key = f"{s.upload_prefix}{name}"
    put = aws.client("s3", s).put_object(Bucket=s.input_bucket, Key=key, Body=body, Metadata=metadata)
    return job_id_for(dedupe_key(s.input_bucket, key, put.get("VersionId"), put.get("ETag"), len(body)))


def _output(stack: LocalStack, payload: dict[str, Any]) -> Image.Image:
    body = aws.client("s3", stack.settings).get_object(
        Bucket=payload["output"]["bucket"], Key=payload["output"]["key"])["Body"].read()
    register_heif_opener()
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def test_heic_upload_succeeds_as_an_upright_jpeg(stack: LocalStack, receiver: WebhookReceiver) -> None:
    register_heif_opener()
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone held upright
    stream = io.BytesIO()
    Image.effect_noise((40, 24), 50).convert("RGB").save(stream, "HEIF", exif=exif.tobytes())
    job_id = _upload(stack, "phone/IMG_0001.HEIC", stream.getvalue(), FAST_MODEL)

    [got] = receiver.wait_for(lambda p: p["job_id"] == job_id, timeout=120)
    payload = got.payload
    assert payload["event_type"] == "upscale.succeeded", payload
    assert payload["output"]["key"].endswith("phone/IMG_0001.jpg")
    assert (payload["input"]["format"], payload["output"]["format"]) == ("heic", "jpeg")
    out = _output(stack, payload)
    assert out.format == "JPEG" and out.size == (96, 160)  # 24x40 upright, x4


def test_16bit_tiff_with_requested_avif(stack: LocalStack, receiver: WebhookReceiver) -> None:
    stream = io.BytesIO()
    array = (np.random.default_rng(5).random((20, 30, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(stream, array, photometric="rgb", compression="zlib", metadata=None)
    job_id = _upload(stack, "scan.tif", stream.getvalue(), {**FAST_MODEL, "format": "avif", "scale": "2"})

    [got] = receiver.wait_for(lambda p: p["job_id"] == job_id, timeout=120)
    payload = got.payload
    assert payload["event_type"] == "upscale.succeeded", payload
    assert payload["output"]["key"].endswith("scan.avif")
    assert (payload["input"]["format"], payload["output"]["format"]) == ("tiff", "avif")
    out = _output(stack, payload)
    assert out.format == "AVIF" and out.size == (60, 40)
    assert any("8 bits" in w for w in payload.get("warnings", [])), payload.get("warnings")
