"""Byte-level mutations of valid images for property-based fuzz tests (hypothesis), with a fixed budget.

The seeds are small valid JPEG/PNG/WebP files of every flavour intake accepts; a mutation overwrites,
inserts, deletes, repeats (many scans or chunks) or truncates bytes, and PNG chunk CRCs can be fixed up
afterwards so that mutations reach past the CRC check into the decoder.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Sequence
from functools import cache

from hostile_images import tiff_ifd, with_exif
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

# Derandomized (the same examples on every run and machine) with a fixed number of examples: the
# budget is a few seconds per test on a shared 2-core machine.
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=500,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    stream = io.BytesIO()
    image.save(stream, fmt, **options)
    return stream.getvalue()


@cache
def seeds() -> dict[str, bytes]:
    gradient = Image.linear_gradient("L").resize((24, 16))
    rgb = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient))
    rgba = rgb.copy()
    rgba.putalpha(gradient)
    exif = b"Exif\x00\x00" + tiff_ifd([(0x0112, 3, 1, struct.pack(">H", 6)), (0x010F, 2, 4, b"Cam\x00")])
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    return {
        "baseline.jpg": _encode(rgb, "JPEG", quality=80, exif=exif),
        "progressive.jpg": _encode(rgb, "JPEG", quality=80, progressive=True),
        "grey.jpg": _encode(gradient, "JPEG", quality=80),
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG", quality=80),
        "rgb.png": _encode(rgb, "PNG", exif=exif),
        "rgba.png": _encode(rgba, "PNG"),
        "palette.png": _encode(palette, "PNG"),
        "rgb16.png": _png16(),
        "lossy.webp": _encode(rgb, "WEBP", quality=80, exif=exif),
        "lossless.webp": _encode(rgba, "WEBP", lossless=True),
    }


def _png16() -> bytes:
    rows = b"".join(b"\x00" + bytes((x * 7 + y * 13) % 256 for x in range(16 * 6)) for y in range(8))
    ihdr = struct.pack(">IIBBBBB", 16, 8, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


Mutation = Callable[[bytearray], None]
_position = st.integers(min_value=0, max_value=1 << 16)


def _overwrite(at: int, value: bytes) -> Mutation:
    def apply(data: bytearray) -> None:
        start = at % max(1, len(data))
        data[start:start + len(value)] = value
    return apply


def _insert(at: int, value: bytes) -> Mutation:
    def apply(data: bytearray) -> None:
        start = at % (len(data) + 1)
        data[start:start] = value
    return apply


def _delete(at: int, count: int) -> Mutation:
    def apply(data: bytearray) -> None:
        start = at % max(1, len(data))
        del data[start:start + count]
    return apply


def _repeat(at: int, length: int, times: int) -> Mutation:
    def apply(data: bytearray) -> None:
        start = at % max(1, len(data))
        piece = bytes(data[start:start + length])
        data[start:start] = piece * times
    return apply


def _truncate(at: int) -> Mutation:
    def apply(data: bytearray) -> None:
        del data[at % max(1, len(data)):]
    return apply


mutations = st.one_of(
    st.builds(_overwrite, _position, st.binary(min_size=1, max_size=4)),
    st.builds(_overwrite, _position, st.sampled_from([b"\xff", b"\x00", b"\xff\xff", b"\x7f\xff\xff\xff",
                                                      b"\xff\xda", b"\xff\xd9", b"IDAT", b"IEND", b"acTL"])),
    st.builds(_insert, _position, st.binary(min_size=1, max_size=32)),
    st.builds(_delete, _position, st.integers(min_value=1, max_value=64)),
    st.builds(_repeat, _position, st.integers(min_value=1, max_value=128), st.integers(min_value=1, max_value=400)),
    st.builds(_truncate, _position),
)


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk CRC of a (mutated) PNG so that the decoder, not the CRC check, sees the damage."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, pos = bytearray(data), 8
    while pos + 12 <= len(out):
        (length,) = struct.unpack_from(">I", out, pos)
        end = pos + 12 + length
        if end > len(out):
            break
        struct.pack_into(">I", out, end - 4, zlib.crc32(bytes(out[pos + 4:end - 4])))
        pos = end
    return bytes(out)


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A seed image with 1-6 mutations (and, half of the time, PNG CRCs fixed up afterwards)."""
    name = draw(st.sampled_from(sorted(seeds())))
    data = bytearray(seeds()[name])
    steps: Sequence[Mutation] = draw(st.lists(mutations, min_size=1, max_size=6))
    for step in steps:
        step(data)
    return fix_png_crcs(bytes(data)) if draw(st.booleans()) else bytes(data)


# Tags whose type the readers care about: orientation, resolutions, strings, the EXIF/GPS IFD pointers.
_EXIF_TAGS = (0x0112, 0x011A, 0x011B, 0x0128, 0x010F, 0x0110, 0x010E, 0x0131, 0x0132, 0x8769, 0x8825, 0x9003)
_exif_entry = st.tuples(
    st.sampled_from(_EXIF_TAGS),
    st.integers(min_value=0, max_value=13) | st.just(99),  # TIFF field types 1-12, plus invalid ones
    st.integers(min_value=0, max_value=8) | st.just(0x7FFFFFFF),
    st.binary(max_size=24),
)


@st.composite
def exif_images(draw: st.DrawFn) -> bytes:
    """A valid small JPEG/PNG/WebP whose EXIF has 1-6 entries of arbitrary tag type, count and value."""
    fmt = draw(st.sampled_from(["JPEG", "PNG", "WEBP"]))
    return with_exif(fmt, tiff_ifd(draw(st.lists(_exif_entry, min_size=1, max_size=6))), size=(24, 16))


any_inputs = mutated_images() | exif_images()
