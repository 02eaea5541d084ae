"""Hostile image files made in the tests: decode-time bombs and broken EXIF (issue 11).

Shared by tests/intake and tests/engine (tests/support is on pytest's pythonpath).
"""

from __future__ import annotations

import io
import re
import struct
import zlib

from PIL import Image

_NEXT_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    stream = io.BytesIO()
    image.save(stream, fmt, **options)
    return stream.getvalue()


def many_scan_jpeg(width: int, height: int, extra_scans: int, mode: str = "L") -> bytes:
    """A valid progressive JPEG of a flat picture with its last scan (and its DHT) repeated `extra_scans` times.

    A flat picture's refinement scan is a few dozen bytes, yet libjpeg walks every block of the image
    for it: 20,000 extra scans make a ~1 MB file that would take many minutes to decode.
    """
    data = encode(Image.new(mode, (width, height), 128), "JPEG", progressive=True, quality=90)
    last_scan = data.rindex(b"\xff\xda")
    scan_end = _NEXT_MARKER.search(data, last_scan + 2 + struct.unpack_from(">H", data, last_scan + 2)[0])
    assert scan_end is not None and data[scan_end.start() + 1] == 0xD9  # the scan runs up to EOI
    table = data.rfind(b"\xff\xc4", 0, last_scan)  # the Huffman table written just before it
    start = table if table != -1 and table + 2 + struct.unpack_from(">H", data, table + 2)[0] == last_scan \
        else last_scan
    repeated = data[start:scan_end.start()]
    return data[:scan_end.start()] + repeated * extra_scans + data[scan_end.start():]


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def many_chunk_png(width: int, height: int, chunks: int, *, kind: bytes = b"IDAT") -> bytes:
    """A valid grey PNG whose image data is followed (IDAT) or preceded (ancillary `kind`) by `chunks` empty chunks."""
    compressed = zlib.compress((b"\x00" + bytes(width)) * height, 9)
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    empty = png_chunk(kind, b"")
    body = png_chunk(b"IDAT", compressed) + empty * chunks if kind == b"IDAT" \
        else empty * chunks + png_chunk(b"IDAT", compressed)
    return b"\x89PNG\r\n\x1a\n" + ihdr + body + png_chunk(b"IEND", b"")


def tiff_ifd(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """EXIF payload (a big-endian TIFF with one IFD) from (tag, type, count, raw value bytes) entries."""
    offset = 8 + 2 + 12 * len(entries) + 4
    fields, extra = b"", b""
    for tag, kind, count, raw in entries:
        if len(raw) <= 4:
            fields += struct.pack(">HHI", tag, kind, count) + raw.ljust(4, b"\x00")
        else:
            fields += struct.pack(">HHII", tag, kind, count, offset + len(extra))
            extra += raw
    return b"MM" + struct.pack(">HI", 42, 8) + struct.pack(">H", len(entries)) + fields + b"\x00" * 4 + extra


def with_exif(fmt: str, exif_payload: bytes, size: tuple[int, int] = (32, 24), mode: str = "RGB") -> bytes:
    """A small picture (a colour gradient, so rotation is visible) carrying `exif_payload` as its EXIF."""
    image = Image.linear_gradient("L").resize(size).convert(mode)
    return encode(image, fmt, exif=b"Exif\x00\x00" + exif_payload)


SHORT, ASCII, LONG, RATIONAL, UNDEFINED, SSHORT, FLOAT = 3, 2, 4, 5, 7, 8, 11
ORIENTATION, X_RESOLUTION, MAKE = 0x0112, 0x011A, 0x010F

# EXIF entries of the wrong type or count, as real software writes them.
BROKEN_EXIF: dict[str, list[tuple[int, int, int, bytes]]] = {
    "orientation as text '6'": [(ORIENTATION, ASCII, 2, b"6\x00")],
    "orientation as text 'abc'": [(ORIENTATION, ASCII, 4, b"abc\x00")],
    "orientation with count 2": [(ORIENTATION, SHORT, 2, struct.pack(">HH", 6, 1))],
    "orientation 0": [(ORIENTATION, SHORT, 1, struct.pack(">H", 0))],
    "orientation 99": [(ORIENTATION, SHORT, 1, struct.pack(">H", 99))],
    "orientation negative": [(ORIENTATION, SSHORT, 1, struct.pack(">h", -3))],
    "orientation rational 6/0": [(ORIENTATION, RATIONAL, 1, struct.pack(">II", 6, 0))],
    "orientation undefined bytes": [(ORIENTATION, UNDEFINED, 3, b"abc")],
    "orientation float 6.5": [(ORIENTATION, FLOAT, 1, struct.pack(">f", 6.5))],
    "x resolution as text": [(X_RESOLUTION, ASCII, 4, b"abc\x00")],
    "x resolution as text, orientation 6": [(ORIENTATION, SHORT, 1, struct.pack(">H", 6)),
                                            (X_RESOLUTION, ASCII, 4, b"abc\x00")],
    "make as a number": [(MAKE, SHORT, 1, struct.pack(">H", 7))],
    "exif pointer past the end": [(0x8769, LONG, 1, struct.pack(">I", 999_999))],
    "exif pointer as text": [(0x8769, ASCII, 4, b"abc\x00")],
    "unknown field type": [(ORIENTATION, 99, 1, struct.pack(">H", 6))],
    "count far past the data": [(0x010E, ASCII, 0x7FFFFFFF, b"")],
}
