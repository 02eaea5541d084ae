"""HEIC, AVIF and TIFF through the real intake (moto S3): bytes read, far header reads, the stated output."""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest
from format_bombs import isobmff_bomb, tiff_bomb
from PIL import Image

from common.heif import register_heif_opener
from functions.intake.intake import Outcome
from functions.intake.s3_events import UploadEvent

BUCKET = "upscaler-input-test"
FIVE_MB = 5 * 1024 * 1024


def event_for(obj: dict[str, Any]) -> UploadEvent:
    return UploadEvent(BUCKET, obj["key"], obj["size"], obj["eTag"], obj.get("versionId"), "ObjectCreated:Put")


def encoded(fmt: str, size: tuple[int, int] = (96, 64), **options: Any) -> bytes:
    register_heif_opener()
    stream = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(stream, fmt, **options)
    return stream.getvalue()


@pytest.mark.parametrize(("name", "data", "gets"), [
    ("bomb.heic", isobmff_bomb("HEIF", FIVE_MB), 1),
    ("bomb.avif", isobmff_bomb("AVIF", FIVE_MB), 1),
    ("bomb.tif", tiff_bomb(FIVE_MB), 2),  # the first bytes, then the IFD at the end of the file
], ids=["heic", "avif", "tiff-ifd-at-end"])
def test_bombs_are_refused_from_ranged_gets(aws_stack: Any, name: str, data: bytes, gets: int) -> None:
    obj = aws_stack.put(f"uploads/{name}", data)
    result = aws_stack.intake.process(event_for(obj))
    assert result.outcome is Outcome.REJECTED
    assert result.verdict.code == "DECOMPRESSION_BOMB"
    assert aws_stack.s3.calls.count("get_object") == gets
    assert aws_stack.s3.bytes_read == result.bytes_read <= gets * aws_stack.settings.header_read_bytes


def test_heic_upload_is_queued_as_jpeg(aws_stack: Any) -> None:
    obj = aws_stack.put("uploads/phone/IMG_0001.HEIC", encoded("HEIF"))
    result = aws_stack.intake.process(event_for(obj))
    assert result.outcome is Outcome.QUEUED, result.verdict
    record = aws_stack.store.get(result.job_id)
    assert record.attributes["output_key"] == "outputs/phone/IMG_0001.jpg"
    assert record.attributes["options"]["output_format"] == "jpeg"


def test_tiff_with_its_ifd_after_the_pixels_is_read_once(aws_stack: Any) -> None:
    data = encoded("TIFF", (600, 400), compression="tiff_lzw")
    assert struct.unpack_from("<I", data, 4)[0] > aws_stack.settings.header_read_bytes
    obj = aws_stack.put("uploads/scan.tif", data)
    result = aws_stack.intake.process(event_for(obj))
    assert result.outcome is Outcome.QUEUED, result.verdict
    assert (result.verdict.width, result.verdict.output_format) == (600, "tiff")
    # the first 64 KiB, the IFD's range, then the rest of the file for the decode check
    assert result.bytes_read <= len(data) + aws_stack.settings.header_read_bytes
