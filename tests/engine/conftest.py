"""Fixtures for the engine tests: one CPU engine, small real photo crops, encoders."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from gpu_batch.engine import Engine


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine(device="cpu")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real photo (scikit-image's astronaut), HxWx3 uint8; where scikit-image is not installed (the GPU check
    machine, benchmarks/gpu/), a photo-like synthetic one of the same size."""
    try:
        from skimage import data
    except ImportError:
        from benchmarks.engine_pipeline import photo

        return np.asarray(decode(photo(512, 512, 3)).convert("RGB"))
    return data.astronaut()


def crop(photo: np.ndarray, height: int, width: int, top: int = 100, left: int = 180) -> np.ndarray:
    return np.ascontiguousarray(photo[top : top + height, left : left + width])


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    stream = io.BytesIO()
    image.save(stream, fmt, **options)
    return stream.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def seam_psnr(tiled: np.ndarray, whole: np.ndarray, tile: int) -> float:
    """Worst PSNR over the bands within 4 input px (16 output px) of each interior seam."""
    worst = float("inf")
    height, width = whole.shape[:2]
    for seam in range(tile * 4, height, tile * 4):
        band = slice(seam - 16, seam + 16)
        worst = min(worst, psnr(tiled[band], whole[band]))
    for seam in range(tile * 4, width, tile * 4):
        band = slice(seam - 16, seam + 16)
        worst = min(worst, psnr(tiled[:, band], whole[:, band]))
    return worst


@pytest.fixture(scope="session")
def tools() -> SimpleNamespace:
    """Helper functions for the test modules (importlib import mode: test modules cannot import conftest)."""
    return SimpleNamespace(crop=crop, encode=encode, decode=decode, psnr=psnr, seam_psnr=seam_psnr)
