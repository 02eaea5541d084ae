"""HEIC decoding for Pillow (pillow-heif: libheif + libde265), registered once where it is needed.

Intake's decode check and the engine's decoder both open HEIC through Pillow after this. Only the
primary image is wanted: thumbnails, depth maps and auxiliary images (alpha aside, which libheif
merges) are not decoded. libheif applies the file's irot/imir transforms and pillow-heif resets the
EXIF orientation to 1 (the HEIF rule: the transforms, not EXIF, orient the image), so the pixels are
upright and nobody rotates them again. pillow-heif is imported on first use: only HEIC uploads pay for it.
"""

from __future__ import annotations

import functools


@functools.cache
def register_heif_opener() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
