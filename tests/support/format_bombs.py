"""Decompression bombs of the container formats, for tests and benchmarks/intake_cost.py.

Each is a real file from the format's encoder whose header is then made to declare a 100000x100000
canvas, padded so that reading the whole file would show in the bytes counted.
"""

from __future__ import annotations

import io
import struct

from PIL import Image

SIDE = 100_000


def _encoded(fmt: str) -> bytes:
    from common.heif import register_heif_opener

    register_heif_opener()
    stream = io.BytesIO()
    Image.linear_gradient("L").resize((64, 64)).convert("RGB").save(stream, fmt)
    return stream.getvalue()


def isobmff_bomb(fmt: str, padded_to: int) -> bytes:
    """HEIF ("HEIF") or AVIF ("AVIF"): every ispe declares SIDE x SIDE; zeros appended after mdat."""
    data = bytearray(_encoded(fmt))
    at = data.find(b"ispe")
    while at >= 0:
        struct.pack_into(">II", data, at + 8, SIDE, SIDE)  # after the FullBox version/flags
        at = data.find(b"ispe", at + 4)
    return bytes(data) + bytes(max(0, padded_to - len(data)))


def tiff_bomb(padded_to: int) -> bytes:
    """A little-endian TIFF whose only IFD lies after `padded_to` bytes of (deflate) data, as libtiff writes it."""
    entries = [(256, 4, 1, SIDE), (257, 4, 1, SIDE), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, SIDE), (279, 4, 1, padded_to)]
    ifd_at = 8 + padded_to
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\x00" * 4
    return b"II*\x00" + struct.pack("<I", ifd_at) + bytes(padded_to) + ifd
