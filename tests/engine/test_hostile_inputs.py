"""Issue 11, the worker's side: decode time bounded, broken or oversized EXIF never fails a job."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import png
import pytest
from hostile_images import BROKEN_EXIF, many_chunk_png, many_scan_jpeg, png_chunk, tiff_ifd, with_exif
from PIL import Image

from common.image_bounds import MAX_PNG_CHUNKS
from common.image_metadata import JPEG_MAX_EXIF_BYTES
from gpu_batch.engine import UndecodableImageError, codec

FAST = "animevideov3"


@pytest.mark.parametrize("data", [
    pytest.param(lambda: many_scan_jpeg(1024, 1024, 30_000), id="30000-scan-jpeg"),
    pytest.param(lambda: many_chunk_png(64, 64, 2 * MAX_PNG_CHUNKS), id="200000-chunk-png"),
])
def test_decode_refuses_hostile_structure_before_decoding(data) -> None:
    hostile = data()
    started = time.perf_counter()
    with pytest.raises(UndecodableImageError, match="save it again") as raised:
        codec.decode(hostile)
    assert time.perf_counter() - started < 1.0
    assert raised.value.permanent  # the worker does not retry it


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("case", sorted(BROKEN_EXIF))
def test_broken_exif_never_raises_in_decode_or_encode(case: str, fmt: str) -> None:
    picture = codec.decode(with_exif(fmt, tiff_ifd(BROKEN_EXIF[case])))
    color = np.round(picture.pixels * 255).astype(np.uint8)
    for out_fmt in ("jpeg", "png", "webp"):
        notes: list[str] = []
        data = codec.encode(color, None, fmt=out_fmt, bit_depth=8, quality=90, icc=picture.icc_profile,
                            exif=picture.exif, notes=notes)
        with Image.open(io.BytesIO(data)) as out:
            out.load()
            if picture.exif:
                assert out.getexif().get(0x0112) == 1  # upright pixels, orientation reset


@pytest.mark.parametrize(("case", "size", "warning"), [
    ("orientation as text 'abc'", (32, 24), "orientation 'abc' is not a valid value"),
    ("orientation 99", (32, 24), "orientation 99 is not a valid value"),
    ("orientation with count 2", (24, 32), None),  # Pillow keeps the first value: 6, applied
    ("x resolution as text", (32, 24), "wrong type were dropped: XResolution"),
    ("x resolution as text, orientation 6", (24, 32), "wrong type were dropped: XResolution"),
])
def test_broken_exif_is_repaired_or_dropped_with_a_warning(case: str, size: tuple[int, int],
                                                           warning: str | None) -> None:
    picture = codec.decode(with_exif("JPEG", tiff_ifd(BROKEN_EXIF[case])))
    assert (picture.width, picture.height) == size
    if warning is None:
        assert picture.warnings == []
    else:
        assert any(warning in note for note in picture.warnings), picture.warnings


def test_unwritable_exif_keeps_the_readable_tags() -> None:
    picture = codec.decode(with_exif("JPEG", tiff_ifd([*BROKEN_EXIF["x resolution as text"],
                                                       (0x010F, 2, 4, b"Cam\x00")])))
    assert picture.exif is not None
    kept = Image.Exif()
    kept.load(picture.exif)
    assert kept.get(0x010F) == "Cam" and 0x011A not in kept


def test_16_bit_png_with_text_orientation_decodes() -> None:
    stream = io.BytesIO()
    png.Writer(16, 8, greyscale=False, bitdepth=16).write_array(stream, list(range(16 * 8 * 3)))
    data = stream.getvalue()
    exif = png_chunk(b"eXIf", tiff_ifd(BROKEN_EXIF["orientation as text 'abc'"]))
    data = data[:33] + exif + data[33:]
    picture = codec.decode(data)
    assert picture.bit_depth == 16 and (picture.width, picture.height) == (16, 8)
    assert any("not a valid value" in note for note in picture.warnings)


def _large_exif_png() -> bytes:
    description = b"x" * 100_000 + b"\x00"
    return with_exif("PNG", tiff_ifd([(0x010E, 2, len(description), description)]), size=(24, 16))


def test_exif_too_long_for_jpeg_is_dropped_at_encode_with_a_warning() -> None:
    picture = codec.decode(_large_exif_png())
    assert picture.exif is not None and len(picture.exif) > JPEG_MAX_EXIF_BYTES
    notes: list[str] = []
    data = codec.encode(np.zeros((16, 24, 3), np.uint8), None, fmt="jpeg", bit_depth=8, quality=90,
                        icc=None, exif=picture.exif, notes=notes)
    assert notes == [f"The EXIF metadata ({len(picture.exif):,} bytes) is larger than a JPEG can hold "
                     f"({JPEG_MAX_EXIF_BYTES:,} bytes) and was dropped."]
    with Image.open(io.BytesIO(data)) as out:
        assert not out.getexif()
    kept = codec.encode(np.zeros((16, 24, 3), np.uint8), None, fmt="png", bit_depth=8, quality=90,
                        icc=None, exif=picture.exif, notes=notes)  # PNG holds it: kept
    with Image.open(io.BytesIO(kept)) as out:
        assert len(out.getexif().get(0x010E, "")) == 100_000


def test_upscale_of_a_large_exif_png_to_jpeg_succeeds_with_the_warning(engine) -> None:
    result = engine.upscale_bytes(_large_exif_png(), model=FAST, scale=2.0, output_format="jpeg")
    assert (result.format, result.output_width, result.output_height) == ("jpeg", 48, 32)
    assert any("larger than a JPEG can hold" in note for note in result.warnings)


def test_upscale_with_text_orientation_succeeds_with_the_warning(engine) -> None:
    data = with_exif("JPEG", tiff_ifd(BROKEN_EXIF["x resolution as text, orientation 6"]))
    result = engine.upscale_bytes(data, model=FAST, scale=2.0)
    assert (result.output_width, result.output_height) == (48, 64)  # orientation 6 applied
    assert any("XResolution" in note for note in result.warnings)


def test_png_crc_is_not_what_stops_the_chunk_bound() -> None:
    """The bound counts chunks before any CRC walk: valid CRCs everywhere, still refused."""
    data = many_chunk_png(16, 16, MAX_PNG_CHUNKS + 1, kind=b"tEXt")
    assert zlib.crc32(b"tEXt") == struct.unpack(">I", data[8 + 25 + 8:8 + 25 + 12])[0]
    with pytest.raises(UndecodableImageError, match="chunks"):
        codec.decode(data)
