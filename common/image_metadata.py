"""EXIF read defensively: metadata of an unexpected type or size never fails an upload.

Uploads carry EXIF written by every kind of software, some of it wrong: an orientation stored as
text or as a pair, a resolution stored as a string, pointers into nowhere, an EXIF block larger than
a JPEG APP1 segment can hold. Pillow parses most of these without complaint, but then `int()` of
the orientation, `ImageOps.exif_transpose` or `Exif.tobytes()` raise. The rules, shared by intake
(validation) and the worker (codec):

- orientation: an integral number 1..8 (SHORT, LONG, even a RATIONAL or FLOAT such as 6.0) is used;
  anything else is ignored (no rotation) with a warning;
- EXIF that cannot be read or written back is dropped with a warning (the pixels are still upscaled);
- EXIF longer than the output format can hold (JPEG: one APP1 segment) is dropped with a warning.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

from PIL import ExifTags, Image

ORIENTATION_TAG = 0x0112
# A JPEG APP1 segment holds 65535 bytes including its 2-byte length: "Exif\0\0" + TIFF data must fit in the rest.
JPEG_MAX_EXIF_BYTES = 65_533
# EXIF orientation -> the Pillow transpose that makes the pixels upright (as ImageOps.exif_transpose).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

UNREADABLE = "The EXIF metadata could not be read and was dropped."
UNWRITABLE = "The EXIF metadata contains values of the wrong type and was dropped."


@dataclass(frozen=True, slots=True)
class ExifRead:
    """An image's EXIF as far as it could be read, its usable orientation, and what went wrong."""

    exif: Image.Exif | None  # None: no EXIF, or unreadable
    orientation: int  # 1..8; 1 when absent or invalid
    warnings: tuple[str, ...] = ()


def orientation_value(raw: object) -> int | None:
    """The orientation 1..8 an EXIF value stands for, or None when it stands for none."""
    if isinstance(raw, bool) or not isinstance(raw, numbers.Real):
        return None  # text, bytes, tuples (a count above 1 that Pillow kept whole), None
    try:
        value = float(raw)
    except (ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None
    if not math.isfinite(value) or value != int(value) or not 1 <= value <= 8:
        return None
    return int(value)


def read_exif(image: Image.Image) -> ExifRead:
    """EXIF of `image` and its orientation; never raises."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on every malformed tag; the outcome is what counts
            exif = image.getexif()
            raw = exif.get(ORIENTATION_TAG)
    except Exception:  # any parser failure on third-party metadata means "unreadable"
        return ExifRead(None, 1, (UNREADABLE,))
    if not exif:
        return ExifRead(None, 1)
    if raw is None:
        return ExifRead(exif, 1)
    orientation = orientation_value(raw)
    if orientation is None:
        return ExifRead(exif, 1, (f"The EXIF orientation {_show(raw)} is not a valid value (1-8); "
                                  "the image was not rotated.",))
    return ExifRead(exif, orientation)


def upright_exif_bytes(exif: Image.Exif | None) -> tuple[bytes | None, tuple[str, ...]]:
    """EXIF bytes for an output whose pixels are already upright (orientation 1); never raises."""
    if not exif:
        return None, ()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exif[ORIENTATION_TAG] = 1  # viewers must not rotate the upright pixels again
        data = _tobytes(exif)
        if data is not None:
            return data, ()
        # Repair: drop the top-level tags that cannot be written on their own, then try again.
        bad = [tag for tag in list(exif) if _tobytes(_only(exif, tag)) is None]
        for tag in bad:
            del exif[tag]
        data = _tobytes(exif) if bad else None
    if data is None:
        return None, (UNWRITABLE,)
    names = ", ".join(ExifTags.TAGS.get(tag, f"0x{tag:04X}") for tag in bad)
    return data, (f"EXIF tags with values of the wrong type were dropped: {names}.",)


def _only(exif: Image.Exif, tag: int) -> Image.Exif:
    probe = Image.Exif()
    probe[tag] = exif[tag]
    return probe


def _tobytes(exif: Image.Exif) -> bytes | None:
    try:
        return exif.tobytes()
    except Exception:  # Pillow raises TypeError/ValueError/struct.error... for mistyped tags
        return None


def exif_for_format(exif: bytes | None, fmt: str) -> tuple[bytes | None, tuple[str, ...]]:
    """`exif` if the output format can hold it, else None and a warning."""
    if exif and fmt == "jpeg" and len(exif) > JPEG_MAX_EXIF_BYTES:
        return None, (f"The EXIF metadata ({len(exif):,} bytes) is larger than a JPEG can hold "
                      f"({JPEG_MAX_EXIF_BYTES:,} bytes) and was dropped.",)
    return exif, ()


def _show(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."
