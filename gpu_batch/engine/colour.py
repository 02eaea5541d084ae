"""Colour fidelity: keep the network's detail but the input's low-frequency colour.

Real-ESRGAN shifts flat colours by up to ~8/255 (a flat (235, 140, 40) comes out (243, 146, 45) from
x4plus and from the ncnn reference alike) and drifts 16-bit levels. This correction measures, per
tile, how far the output's block means (each factor x factor block averaged) are from the input,
smooths that difference over ~2*radius input pixels so only broad colour error is corrected (never
texture, noise or JPEG blocks), and adds it back, upsampled. It only looks `2*radius + 1` input
pixels around each pixel, well inside the tile overlap, so tiled output still equals whole-image output.
"""

from __future__ import annotations

import numpy as np

LOW_FREQUENCY_RADIUS = 4


def _box_blur(array: np.ndarray, radius: int, axis: int) -> np.ndarray:
    pad = [(0, 0)] * array.ndim
    pad[axis] = (radius + 1, radius)
    padded = np.pad(array, pad, mode="edge")
    summed = np.cumsum(padded, axis=axis, dtype=np.float64)
    size = array.shape[axis]
    upper = np.take(summed, np.arange(2 * radius + 1, 2 * radius + 1 + size), axis=axis)
    lower = np.take(summed, np.arange(0, size), axis=axis)
    return ((upper - lower) / (2 * radius + 1)).astype(np.float32)


def _upsample_linear(array: np.ndarray, factor: int, axis: int) -> np.ndarray:
    size = array.shape[axis]
    positions = (np.arange(size * factor) + 0.5) / factor - 0.5
    low = np.clip(np.floor(positions).astype(int), 0, size - 1)
    high = np.clip(low + 1, 0, size - 1)
    weight = np.clip(positions - low, 0.0, 1.0).astype(np.float32)
    shape = [1] * array.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    return np.take(array, low, axis=axis) * (1 - weight) + np.take(array, high, axis=axis) * weight


def match_low_frequency(inputs: np.ndarray, outputs: np.ndarray, factor: int,
                        radius: int = LOW_FREQUENCY_RADIUS) -> np.ndarray:
    """inputs NxCxHxW, outputs NxCx(fH)x(fW), both float32 0..1; returns corrected outputs (in place)."""
    n, c, h, w = inputs.shape
    block_means = outputs.reshape(n, c, h, factor, w, factor).mean(axis=(3, 5))
    error = inputs - block_means
    for axis in (2, 3):
        error = _box_blur(_box_blur(error, radius, axis), radius, axis)
    correction = _upsample_linear(_upsample_linear(error, factor, 2), factor, 3)
    outputs += correction
    return outputs
