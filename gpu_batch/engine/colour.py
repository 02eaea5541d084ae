"""Colour fidelity: keep the network's detail but the input's low-frequency colour.

Real-ESRGAN shifts flat colours by up to ~8/255 (a flat (235, 140, 40) comes out (243, 146, 45) from
x4plus and from the ncnn reference alike) and drifts 16-bit levels. This correction measures, per
tile, how far the output's block means (each factor x factor block averaged) are from the input,
smooths that difference over ~2*radius input pixels so only broad colour error is corrected (never
texture, noise or JPEG blocks), and adds it back, upsampled. It only looks `2*radius + 1` input
pixels around each pixel, well inside the tile overlap, so tiled output still equals whole-image output.
The same correction exists twice: in numpy (`match_low_frequency`, the reference) and as ONNX nodes
(`colour_fix_nodes`) that postprocess.py appends to the network so it runs on the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

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


def colour_fix_nodes(window: str, output: str, factor: int, scales: str, *, prefix: str,
                     radius: int = LOW_FREQUENCY_RADIUS) -> tuple[str, list[onnx.NodeProto], list[onnx.TensorProto]]:
    """`match_low_frequency` as ONNX nodes: (the correction's value name, nodes, constants); the caller adds
    the correction to `output`. Block means are an AveragePool, each box blur an edge Pad and an AveragePool,
    the upsample a linear half-pixel Resize (which clamps at the edges, as `_upsample_linear` does)."""
    nodes: list[onnx.NodeProto] = []
    constants: list[onnx.TensorProto] = []

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        # Any: ONNX attributes of every kind, as make_node takes them
        nodes.append(helper.make_node(op, inputs, [f"{prefix}.{name}"], name=f"{prefix}.{name}", **attrs))
        return f"{prefix}.{name}"

    means = node("AveragePool", [output], "block_means", kernel_shape=[factor, factor], strides=[factor, factor])
    error = node("Sub", [window, means], "error")
    size = 2 * radius + 1
    for axis, kernel in ((2, [size, 1]), (3, [1, size])):
        pads = np.zeros(8, np.int64)
        pads[axis], pads[4 + axis] = radius, radius
        constants.append(numpy_helper.from_array(pads, f"{prefix}.pads{axis}"))
        for round_ in (1, 2):
            edged = node("Pad", [error, f"{prefix}.pads{axis}"], f"edge{axis}_{round_}", mode="edge")
            error = node("AveragePool", [edged], f"blur{axis}_{round_}", kernel_shape=kernel)
    correction = node("Resize", [error, "", scales], "correction", mode="linear",
                      coordinate_transformation_mode="half_pixel")
    return correction, nodes, constants
