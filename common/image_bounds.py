"""Decode work bounded before decoding: refuse files whose structure alone would take too long to decode.

A small file can pass every size and pixel limit and still take minutes to decode: a progressive JPEG
with tens of thousands of (empty) scans makes libjpeg walk every block of the image once per scan, and a
PNG split into millions of tiny chunks costs a Python-level step per chunk in Pillow. Both are counted
here from the bytes, stopping as soon as a limit is passed, so the count itself is cheap. Intake
(on the header bytes, then on the whole file) and the worker's decode (gpu_batch/engine/codec.py) import
this module: the same numbers protect both.

Measured on a shared 2-core VM (Pillow 13): 1000 scans of a 4096x4096 grey JPEG decode in ~20 s;
1,000,000 empty PNG chunks cost ~8 s. At the limits below a 16.7 MP image decodes in about 2 s more
than a normal one.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

# libjpeg's default progressive script writes 10 scans (6 for grey), Photoshop 3-5, mozjpeg about a
# dozen; a baseline JPEG has one per component at most.
MAX_JPEG_SCANS = 100
# Marker segments (APPn, DQT, DHT, COM, SOS, ...): a real file has a few dozen. Pillow walks the ones
# before the first scan in Python, so millions of tiny COM segments would be slow too.
MAX_JPEG_SEGMENTS = 10_000
# libpng writes 8 KiB IDAT chunks: a 50 MB PNG has about 6,400 chunks.
MAX_PNG_CHUNKS = 100_000

_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: no length field
# In entropy-coded data 0xFF is followed by 0x00 (stuffing) or RSTn; anything else is the next marker.
_NEXT_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class DecodeCostExceeded:
    """The structure that makes decoding too costly: more than `limit` of `what` in a `format` file."""

    format: str  # "JPEG" | "PNG"
    what: str  # "scans" | "marker segments" | "chunks"
    limit: int

    def sentence(self) -> str:
        """For a person: what is wrong and what to do."""
        return (f"The {self.format} file is split into more than {self.limit:,} {self.what} (cameras and "
                f"image editors write far fewer); decoding it would take too long. Open it in an image "
                f"editor and save it again.")


@dataclass(frozen=True, slots=True)
class JpegStructure:
    scans: int
    segments: int


def jpeg_structure(data: bytes, *, max_scans: int = MAX_JPEG_SCANS,
                   max_segments: int = MAX_JPEG_SEGMENTS) -> JpegStructure:
    """Count the scans (SOS) and marker segments of the first image, stopping just past either limit.

    Works on the first bytes of a file as well as on a whole one (counts what is there). Never raises:
    a damaged marker stream ends the count, and the decoder reports the damage.
    """
    pos, scans, segments, size = 2, 0, 0, len(data)
    while pos + 2 <= size and scans <= max_scans and segments <= max_segments:
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == 0xD9:  # EOI: MPF extras and trailing data are not decoded
            break
        if pos + 4 > size:
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            break
        segments += 1
        pos += 2 + length
        if marker == 0xDA:
            scans += 1
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return JpegStructure(scans, segments)


def png_chunk_count(data: bytes, *, limit: int = MAX_PNG_CHUNKS) -> int:
    """Chunks of a PNG up to IEND (or the end of `data`), stopping just past `limit`. Never raises."""
    pos, chunks, size = len(_PNG_SIGNATURE), 0, len(data)
    while pos + 8 <= size and chunks <= limit:
        length, ctype = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if ctype == b"IEND":
            break
        pos += 12 + length
    return chunks


def decode_cost_problem(data: bytes) -> DecodeCostExceeded | None:
    """Whether `data` (a whole file or its first bytes) has more structure than any real image needs."""
    if data.startswith(b"\xff\xd8\xff"):
        found = jpeg_structure(data)
        if found.scans > MAX_JPEG_SCANS:
            return DecodeCostExceeded("JPEG", "scans", MAX_JPEG_SCANS)
        if found.segments > MAX_JPEG_SEGMENTS:
            return DecodeCostExceeded("JPEG", "marker segments", MAX_JPEG_SEGMENTS)
    elif data.startswith(_PNG_SIGNATURE) and png_chunk_count(data) > MAX_PNG_CHUNKS:
        return DecodeCostExceeded("PNG", "chunks", MAX_PNG_CHUNKS)
    return None
