"""What turns the network's raw output into final pixels, in two interchangeable forms.

`fuse` appends it to the network's ONNX graph, so the device returns finished pixels (uint8, or uint16 for
16-bit inputs, NHWC) and the host only places them: the crop of a padded network's output, Real-CUGAN 4x's
nearest-upscaled input, the colour fix (colour.py), clamp, rounding and the cast. `on_host` is the same work
in numpy on a float32 output copied back from the device: the reference the fused graph is tested against
(<= 1/255) and the "today" side of benchmarks/gpu_busy.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .colour import colour_fix_nodes, match_low_frequency
from .convert import INPUT_NAME, OUTPUT_NAME

PIXELS_NAME = "pixels"  # the fused graph's output: N x (f*h) x (f*w) x 3, uint8 or uint16
# int64 [h, w] of the unpadded window: networks fed a padded window (Real-CUGAN) crop their output to f*h x f*w
WINDOW_SIZE_NAME = "window_size"
_ONNX_TYPES = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.uint16): TensorProto.UINT16}


def peak(out_dtype: type[np.integer] | np.dtype) -> float:
    return float(np.iinfo(out_dtype).max)


def fuse(model: onnx.ModelProto, *, factor: int, shrink: int, padded: bool, adds_nearest_input: bool,
         colour_fix: bool, out_dtype: type[np.integer]) -> onnx.ModelProto:
    """The network's graph with its float output replaced by final pixels (the model is changed in place).

    `padded`: the runner feeds the window reflect-padded by `shrink` and aligned (ModelRunner.padded), and the
    graph takes the window's own size as WINDOW_SIZE_NAME to find it again."""
    graph = model.graph
    raw = "network.output"
    for existing in graph.node:
        existing.output[:] = [raw if name == OUTPUT_NAME else name for name in existing.output]
    outputs = [o for o in graph.output if o.name != OUTPUT_NAME]
    del graph.output[:]
    graph.output.extend(outputs)

    nodes: list[onnx.NodeProto] = []
    constants: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        constants.append(numpy_helper.from_array(value, f"post.{name}"))
        return f"post.{name}"

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        # Any: ONNX attributes of every kind, as make_node takes them
        nodes.append(helper.make_node(op, inputs, [f"post.{name}"], name=f"post.{name}", **attrs))
        return f"post.{name}"

    window, net = INPUT_NAME, raw
    if padded:
        hw = const("axes_hw", np.array([2, 3], np.int64))
        graph.input.append(helper.make_tensor_value_info(WINDOW_SIZE_NAME, TensorProto.INT64, [2]))
        start = const("shrink", np.array([shrink, shrink], np.int64))
        end = node("Add", [WINDOW_SIZE_NAME, start], "window_end")
        window = node("Slice", [INPUT_NAME, start, end, hw], "window")
        out_end = node("Mul", [WINDOW_SIZE_NAME, const("factor", np.array([factor, factor], np.int64))], "out_end")
        net = node("Slice", [raw, const("zeros", np.array([0, 0], np.int64)), out_end, hw], "cropped")
    scales = const("scales", np.array([1, 1, factor, factor], np.float32))
    if adds_nearest_input:
        nearest = node("Resize", [window, "", scales], "nearest", mode="nearest",
                       coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        net = node("Add", [net, nearest], "with_input")
    if colour_fix:
        correction, fix_nodes, fix_constants = colour_fix_nodes(window, net, factor, scales, prefix="post.colour")
        nodes.extend(fix_nodes)
        constants.extend(fix_constants)
        net = node("Add", [net, correction], "colour_fixed")
    top = peak(out_dtype)
    clipped = node("Clip", [net, const("zero", np.array(0, np.float32)), const("one", np.array(1, np.float32))],
                   "clipped")
    rounded = node("Round", [node("Mul", [clipped, const("peak", np.array(top, np.float32))], "scaled")], "rounded")
    cast = node("Cast", [rounded], "cast", to=_ONNX_TYPES[np.dtype(out_dtype)])
    nodes.append(helper.make_node("Transpose", [cast], [PIXELS_NAME], name="post.nhwc", perm=[0, 2, 3, 1]))

    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    graph.output.append(helper.make_tensor_value_info(PIXELS_NAME, _ONNX_TYPES[np.dtype(out_dtype)],
                                                      ["batch", "out_height", "out_width", 3]))
    return model


def on_host(windows: np.ndarray, raw: np.ndarray, factor: int, *, colour_fix: bool,
            out_dtype: type[np.integer]) -> np.ndarray:
    """windows Nx3xhxw and the network's float output Nx3x(fh)x(fw) -> N x fh x fw x 3 `out_dtype` (numpy)."""
    result = np.array(raw, dtype=np.float32, copy=True)
    if colour_fix:
        result = match_low_frequency(windows, result, factor)
    np.clip(result, 0.0, 1.0, out=result)
    result *= np.float32(peak(out_dtype))
    return np.rint(result).astype(out_dtype).transpose(0, 2, 3, 1)
