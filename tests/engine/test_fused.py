"""The post-processing fused into each shipped network's graph gives the numpy path's pixels (<= 1/255)."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_batch.engine.models import MODEL_NETWORKS, ensure_model, model_spec
from gpu_batch.engine.runtime import load_runner

SHIPPED = sorted({network for networks in MODEL_NETWORKS.values() for network in networks})


def _windows(astronaut: np.ndarray, height: int, width: int) -> np.ndarray:
    crop = astronaut[150 : 150 + height, 200 : 200 + width].astype(np.float32) / 255.0
    return np.ascontiguousarray(crop.transpose(2, 0, 1)[None])


@pytest.mark.slow
@pytest.mark.parametrize("network", SHIPPED)
def test_fused_post_processing_matches_numpy_on_every_network(network, astronaut) -> None:
    ensure_model(network, fetch=True)
    windows = _windows(astronaut, 38, 45)  # odd sizes: Real-CUGAN pads and crops, the colour fix's blocks
    fused = load_runner(network, "cpu").forward(windows)
    numpy = load_runner(network, "cpu", fused=False).forward(windows)
    factor = model_spec(network).scale
    assert fused.shape == numpy.shape == (1, 38 * factor, 45 * factor, 3)
    assert fused.dtype == numpy.dtype == np.uint8
    assert np.abs(fused.astype(int) - numpy).max() <= 1
    assert 20 < fused.mean() < 235  # a picture, not a constant


def test_fused_16_bit_output_matches_numpy(astronaut) -> None:
    windows = _windows(astronaut, 20, 24)
    fused = load_runner("animevideov3", "cpu", out_dtype=np.uint16).forward(windows)
    numpy = load_runner("animevideov3", "cpu", out_dtype=np.uint16, fused=False).forward(windows)
    assert fused.dtype == numpy.dtype == np.uint16
    assert np.abs(fused.astype(int) - numpy).max() <= 257  # 1/255 of the 16-bit range
    assert fused.max() > 255  # really 16 bits, not 8 bits in a wider type


def test_colour_fix_can_be_left_out_of_the_graph(astronaut) -> None:
    """benchmarks/quality.py's row without the colour fix: the same switch on both paths."""
    windows = _windows(astronaut, 24, 24)
    fused = load_runner("animevideov3", "cpu", colour_fix=False).forward(windows).astype(int)
    numpy = load_runner("animevideov3", "cpu", colour_fix=False, fused=False).forward(windows)
    fixed = load_runner("animevideov3", "cpu").forward(windows)
    assert np.abs(fused - numpy).max() <= 1
    assert np.abs(fused - fixed).max() >= 2  # the fix does change pixels: the switch is not a no-op
