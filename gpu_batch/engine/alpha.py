"""Colour under transparent pixels: bleed the visible colours outward so no fringe appears.

Fully transparent pixels usually hold black (or anything). The network looks at neighbours, so
that hidden colour would leak into the visible edge as a dark or coloured fringe. A push-pull
fill replaces every fully transparent pixel with the alpha-weighted mean colour of the nearest
visible pixels (coarser levels fill farther holes) and leaves visible pixels untouched.
"""

from __future__ import annotations

import numpy as np


def _halve(array: np.ndarray) -> np.ndarray:
    """Sum over 2x2 blocks (odd edges padded with zeros, which carry zero weight)."""
    h, w = array.shape[:2]
    padded = np.pad(array, [(0, h % 2), (0, w % 2)] + [(0, 0)] * (array.ndim - 2))
    return padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]


def bleed_colour(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """color HxWxC float, alpha HxW float 0..1 -> color with transparent pixels filled from their neighbours."""
    hidden = alpha <= 0.0
    if not hidden.any() or hidden.all():
        return color
    weighted = [color * alpha[..., None]]
    weights = [alpha.astype(np.float32)]
    while weights[-1].shape[0] > 1 or weights[-1].shape[1] > 1:
        weighted.append(_halve(weighted[-1]))
        weights.append(_halve(weights[-1]))
    fill = weighted[-1] / np.maximum(weights[-1], 1e-12)[..., None]
    for level in range(len(weights) - 2, -1, -1):
        h, w = weights[level].shape
        upsampled = np.repeat(np.repeat(fill, 2, axis=0), 2, axis=1)[:h, :w]
        known = weights[level] > 0
        mean = weighted[level] / np.maximum(weights[level], 1e-12)[..., None]
        fill = np.where(known[..., None], mean, upsampled)
    return np.where(hidden[..., None], fill, color).astype(color.dtype)
