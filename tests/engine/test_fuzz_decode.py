"""Property-based fuzz of the worker's decode + metadata path: any mutation of a valid image is decoded
(and re-encoded with its metadata) or raises the engine's own error, nothing else."""

from __future__ import annotations

import numpy as np
import pytest
from fuzzing import FUZZ, any_inputs
from hypothesis import given
from PIL import Image

from gpu_batch.engine import EngineError, codec


@pytest.fixture(autouse=True)
def small_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutated header can declare a huge canvas; intake refuses those, here Pillow's bomb check does (cheaply)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)


@FUZZ
@given(data=any_inputs)
def test_mutated_images_decode_or_raise_the_engines_error(data: bytes) -> None:
    try:
        picture = codec.decode(data)
    except EngineError:
        return
    peak = 65535 if picture.bit_depth == 16 else 255
    color = np.round(picture.pixels * peak).astype(np.uint16 if picture.bit_depth == 16 else np.uint8)
    alpha = None if picture.alpha is None else np.round(picture.alpha * peak).astype(color.dtype)
    fmt = codec.choose_format(picture, None)
    for out_fmt in {fmt, "jpeg"}:
        codec.encode(color, alpha, fmt=out_fmt, bit_depth=picture.bit_depth, quality=80,
                     icc=picture.icc_profile, exif=picture.exif, notes=list(picture.warnings))
