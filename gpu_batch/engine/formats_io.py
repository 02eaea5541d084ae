"""HEIC, AVIF and TIFF where Pillow's generic path would lose something: more than 8 bits in, AVIF/TIFF out.

- HEIC opens through Pillow (common/heif.py registers pillow-heif), which gives 8 bits per channel;
  a 10/12-bit HEIC is read again with pillow-heif at 16 bits so the output can keep them.
- A 16-bit RGB(A) TIFF: Pillow reduces it to 8 bits, so tifffile (with imagecodecs for LZW, JPEG,
  PackBits) reads the first page's samples; the Orientation tag is applied here, as Pillow does.
- A TIFF's IFD0 is all of Pillow's "EXIF" for it: the strip tables, the colour map, the ICC profile and
  Photoshop's layer data would be copied into the output's EXIF. Only the descriptive tags are kept.
- AVIF is written by Pillow's own plugin (libavif + aom; 8 bits per channel); TIFF by tifffile (8 or
  16 bits, Deflate with a predictor; ICC and XMP kept; of EXIF the descriptive IFD0 tags).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

ORIENTATION_TAG = 0x0112
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
XMP_TAG = 700
# TIFF/EXIF IFD0 tags that describe the photo rather than how its pixels are stored (kept in outputs).
DESCRIPTIVE_TAGS = frozenset({
    270,  # ImageDescription
    271,  # Make
    272,  # Model
    ORIENTATION_TAG,  # reset to 1 once the pixels are upright
    305,  # Software
    306,  # DateTime
    315,  # Artist
    33432,  # Copyright
    EXIF_IFD,
    GPS_IFD,
})
# The ones tifffile can write into a TIFF as plain ASCII tags.
_ASCII_TAGS = (270, 271, 272, 306, 315, 33432)  # 305 Software: tifffile writes its own
AVIF_QUALITY = 90  # libavif's 0-100 scale; 90 keeps fine texture (the upscaler's product) intact
AVIF_SPEED = 9  # libaom's 0 (slowest) .. 10: same PSNR as 6, a fifth of the CPU (see codec.py's encoder effort)


def keep_descriptive_exif(image: Image.Image) -> None:
    """Drop the storage tags from a TIFF's EXIF view in place (Pillow caches the object getexif returns)."""
    try:
        exif = image.getexif()
        for tag in [t for t in exif if t not in DESCRIPTIVE_TAGS]:
            del exif[tag]
    except Exception:  # unreadable metadata is the EXIF reader's problem to report, not a decode failure
        return


def heif_high_bit_depth(data: bytes, image: Image.Image) -> np.ndarray | None:
    """HxWxC uint16 (C = 3 or 4, alpha last) of a HEIC with more than 8 bits per channel, else None."""
    if image.format != "HEIF" or int(image.info.get("bit_depth") or 8) <= 8:
        return None
    import pillow_heif

    heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
    array = np.asarray(heif[heif.primary_index])  # pillow-heif scales 10/12-bit samples to 16 bits
    return array[..., None] if array.ndim == 2 else array


def tiff_high_bit_depth(data: bytes, image: Image.Image) -> tuple[np.ndarray, int] | None:
    """(HxWxC uint16 as stored, Orientation tag) of a 16-bit colour TIFF's first page, else None.

    16-bit grayscale needs none of this: Pillow reads it as I;16.
    """
    if image.format != "TIFF" or image.mode.startswith("I") or image.mode == "F":
        return None
    tags = getattr(image, "tag_v2", {})
    bits = tags.get(258, (8,))
    if max(bits if isinstance(bits, tuple) else (bits,)) <= 8:
        return None
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first
        array = page.asarray()
        if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and array.ndim == 3:
            array = np.moveaxis(array, 0, -1)
        if array.ndim == 2:
            array = array[..., None]
        if page.photometric == tifffile.PHOTOMETRIC.MINISWHITE:
            array[..., :1] = 65535 - array[..., :1]
        extra = page.extrasamples
        if array.shape[2] in (2, 4) and extra and int(extra[0]) == 1:  # associated (premultiplied) alpha
            alpha = array[..., -1:].astype(np.float32)
            colour = np.where(alpha > 0, array[..., :-1] * (65535.0 / np.maximum(alpha, 1)), 0)
            array = np.concatenate([np.clip(np.rint(colour), 0, 65535), alpha], axis=2)
        tag = page.tags.get(ORIENTATION_TAG)  # read here: Pillow drops the tag once it has applied it
        orientation = int(tag.value) if tag is not None and 1 <= int(tag.value) <= 8 else 1
    return np.ascontiguousarray(array, dtype=np.uint16), orientation


def encode_avif(image: Image.Image, *, quality: int, options: dict[str, object]) -> bytes:
    """8-bit L/LA/RGB/RGBA -> AVIF. Full chroma at high quality (fine detail is what an upscale adds)."""
    stream = io.BytesIO()
    # autotiling: libavif picks the tile grid from the size, so large outputs encode on every core (same bytes)
    image.save(stream, "AVIF", quality=quality, speed=AVIF_SPEED, subsampling="4:4:4" if quality >= 90 else "4:2:0",
               autotiling=True, **options)
    return stream.getvalue()


def encode_tiff(color: np.ndarray, alpha: np.ndarray | None, *, icc: bytes | None, exif: bytes | None,
                xmp: bytes | None, notes: list[str]) -> bytes:
    """HxWxC uint8/uint16 (+ HxW alpha of the same dtype) -> TIFF, Deflate with the horizontal predictor."""
    import tifffile

    array = color if alpha is None else np.concatenate([color, alpha[..., None]], axis=2)
    gray = color.shape[2] == 1
    extratags: list[tuple[int, str, int, object, bool]] = []
    if xmp:
        extratags.append((XMP_TAG, "B", len(xmp), xmp, True))
    if exif:
        extratags.extend(_ascii_exif_tags(exif, notes))
    stream = io.BytesIO()
    tifffile.imwrite(
        stream, array[..., 0] if gray and alpha is None else array,
        photometric="minisblack" if gray else "rgb",
        extrasamples=("unassalpha",) if alpha is not None else None,
        compression="zlib", predictor=True, iccprofile=icc, extratags=extratags, metadata=None,
    )
    return stream.getvalue()


def _ascii_exif_tags(exif: bytes, notes: list[str]) -> list[tuple[int, str, int, object, bool]]:
    parsed = Image.Exif()
    try:
        parsed.load(exif)
    except Exception:
        notes.append("The EXIF metadata could not be copied into the TIFF.")
        return []
    tags: list[tuple[int, str, int, object, bool]] = []
    for tag in _ASCII_TAGS:
        value = parsed.get(tag)
        if isinstance(value, str) and value:
            tags.append((tag, "s", 0, value, True))
    if EXIF_IFD in parsed or GPS_IFD in parsed:
        notes.append("TIFF output keeps the camera make, model, date and copyright of the EXIF metadata; "
                     "its capture settings and GPS position are not written.")
    return tags
