"""Build an ONNX graph from parsed ncnn layers and their weights.

Only the layer types the shipped networks (Real-ESRGAN, RealSR, Real-CUGAN) use are supported;
anything else raises, so a new model never converts silently wrong. The graph takes RGB float32
0..1 NCHW of any height and width and returns the unclamped network output, as ncnn does. With `precision="fp16"` the
weights and activations are float16 while the graph's input and output stay float32 (a Cast at
each end), so callers feed and read the same arrays for both precisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .ncnn_bin import WeightReader
from .ncnn_param import Layer

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
# Global pooling (Real-CUGAN's squeeze-excitation) sees the whole input, so a tile's means differ from the
# image's and seams show. Each global mean is therefore also a graph output `pooled.<i>`, and can be replaced
# by a given one, input `pooled.<i>.given` (float32 1xCx1x1), wherever the bool input USE_GIVEN_POOLED is true:
# the engine measures the means once per image and gives them to every tile.
POOLED_PREFIX = "pooled."
USE_GIVEN_POOLED = "use_given_pooled"
CONVERTER_VERSION = "4"

# ncnn activation_type of Convolution / Deconvolution / InnerProduct (param 9)
ACT_NONE, ACT_RELU, ACT_LEAKY, ACT_SIGMOID = 0, 1, 2, 4
# ncnn Eltwise op_type (param 0) / BinaryOp op_type (param 0)
ELTWISE_SUM = 1
BINARY_OPS = {0: "Add", 2: "Mul"}
# ncnn Pooling pooling_type (param 0)
POOL_AVERAGE = 1
# ncnn Interp resize_type (param 0)
INTERP_NEAREST, INTERP_BICUBIC = 1, 3


class UnsupportedLayerError(ValueError):
    """The network uses an ncnn layer or option this converter does not translate."""


class _GraphBuilder:
    def __init__(self, precision: str) -> None:
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
        self.dtype = np.float16 if precision == "fp16" else np.float32
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.blob: dict[str, str] = {}  # ncnn blob name -> ONNX value name
        # Conv outputs with no activation -> their weight/bias initializer indexes, so a constant factor
        # applied to them can be folded into the weights (ONNX Runtime's fused NCHWc kernels then take the
        # following Add as part of the convolution instead of leaving the fast layout for a Mul and a Sum).
        self.linear_convs: dict[str, tuple[int, ...]] = {}
        self.channels: dict[str, int] = {}  # ONNX value -> channel count, where known (conv and sum outputs)
        self.pooled: list[tuple[str, str, int]] = []  # (computed mean, given input, channels) per global pooling

    def const(self, name: str, array: np.ndarray, *, keep_dtype: bool = False) -> str:
        value = array if keep_dtype else array.astype(self.dtype)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def scale_linear_conv(self, value: str, factor: float) -> bool:
        """Multiply a linear Conv's weights and bias by `factor` (conv(x) * f == conv_f(x)); False if not one."""
        indexes = self.linear_convs.pop(value, None)
        if indexes is None:
            return False
        for index in indexes:
            tensor = self.initializers[index]
            scaled = numpy_helper.to_array(tensor).astype(np.float32) * np.float32(factor)
            self.initializers[index] = numpy_helper.from_array(scaled.astype(self.dtype), tensor.name)
        return True

    def scale(self, value: str, factor: float, name: str) -> str:
        """`value * factor`, as a weight fold where possible, else as a node.

        fp32 (the CPU model) scales with a 1x1 depthwise Conv rather than a Mul: ONNX Runtime keeps Conv in
        its blocked NCHWc layout but not a scalar Mul, which otherwise costs a layout reorder around every
        RRDB residual and leaves the dense-block Concats in plain NCHW (measured +6-10% on x4plus).
        """
        if self.scale_linear_conv(value, factor):
            return value
        channels = self.channels.get(value)
        if self.dtype == np.float32 and channels:
            weight = self.const(f"{name}.weight", np.full((channels, 1, 1, 1), factor))
            out = self.node("Conv", [value, weight], f"{name}.out", name, kernel_shape=[1, 1], group=channels)
        else:
            out = self.node("Mul", [value, self.const(f"{name}.factor", np.array(factor))], f"{name}.out", name)
        self.channels[out] = channels or 0
        return out

    def node(self, op: str, inputs: Sequence[str], output: str, name: str, **attrs: Any) -> str:
        # Any: ONNX attributes of every kind (ints, floats, strings, lists, tensors), as make_node takes them.
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=name, **attrs))
        return output

    @staticmethod
    def out(layer: Layer) -> str:
        return f"blob.{layer.outputs[0]}"  # prefixed: ncnn blob names may clash with the graph's IO names

    def value(self, blob: str) -> str:
        try:
            return self.blob[blob]
        except KeyError:
            raise UnsupportedLayerError(f"blob {blob!r} is used before any layer produces it") from None


def _convolution(g: _GraphBuilder, layer: Layer, weights: WeightReader) -> None:
    out_channels = layer.int(0, 0)
    kernel_w = layer.int(1, 0)
    kernel_h = layer.int(11, kernel_w)
    dilation_w = layer.int(2, 1)
    dilation_h = layer.int(12, dilation_w)
    stride_w = layer.int(3, 1)
    stride_h = layer.int(13, stride_w)
    pad_left = layer.int(4, 0)
    pad_right = layer.int(15, pad_left)
    pad_top = layer.int(14, pad_left)
    pad_bottom = layer.int(16, pad_top)
    has_bias = layer.int(5, 0)
    weight_count = layer.int(6, 0)
    activation = layer.int(9, ACT_NONE)
    if min(pad_left, pad_right, pad_top, pad_bottom) < 0:
        raise UnsupportedLayerError(f"{layer.name}: 'same' padding modes are not supported")
    if layer.int(8, 0) != 0:
        raise UnsupportedLayerError(f"{layer.name}: int8 convolution is not supported")
    in_channels, remainder = divmod(weight_count, out_channels * kernel_h * kernel_w)
    if remainder:
        raise UnsupportedLayerError(f"{layer.name}: weight count {weight_count} does not fit the kernel")

    kernel = weights.tagged(weight_count).reshape(out_channels, in_channels, kernel_h, kernel_w)
    first_initializer = len(g.initializers)
    inputs = [g.value(layer.inputs[0]), g.const(f"{layer.name}.weight", kernel)]
    if has_bias:
        inputs.append(g.const(f"{layer.name}.bias", weights.raw_float32(out_channels)))
    if activation == ACT_NONE:
        g.linear_convs[g.out(layer)] = tuple(range(first_initializer, len(g.initializers)))
    conv_out = f"{layer.name}.conv" if activation != ACT_NONE else g.out(layer)
    g.node("Conv", inputs, conv_out, layer.name, kernel_shape=[kernel_h, kernel_w],
           pads=[pad_top, pad_left, pad_bottom, pad_right], strides=[stride_h, stride_w],
           dilations=[dilation_h, dilation_w])
    _activation(g, layer, conv_out, activation)
    g.channels[g.out(layer)] = out_channels


def _activation(g: _GraphBuilder, layer: Layer, value: str, activation: int) -> None:
    """ncnn's fused activation (param 9, slope in array 10) from `value` to the layer's output blob."""
    if activation == ACT_LEAKY:
        slope = layer.array(10)[0] if layer.array(10) else 0.0
        g.node("LeakyRelu", [value], g.out(layer), f"{layer.name}.act", alpha=float(slope))
    elif activation == ACT_RELU:
        g.node("Relu", [value], g.out(layer), f"{layer.name}.act")
    elif activation == ACT_SIGMOID:
        g.node("Sigmoid", [value], g.out(layer), f"{layer.name}.act")
    elif activation != ACT_NONE:
        raise UnsupportedLayerError(f"{layer.name}: activation type {activation} is not supported")
    g.blob[layer.outputs[0]] = g.out(layer)


def _deconvolution(g: _GraphBuilder, layer: Layer, weights: WeightReader) -> None:
    """ncnn Deconvolution -> ConvTranspose. ncnn stores the kernel [out][in][kh][kw], ONNX [in][out][kh][kw];
    both scatter with the kernel unflipped, and ncnn's pads trim the output as ONNX's do."""
    out_channels, kernel_w = layer.int(0, 0), layer.int(1, 0)
    kernel_h = layer.int(11, kernel_w)
    dilation_w, stride_w, pad_left = layer.int(2, 1), layer.int(3, 1), layer.int(4, 0)
    dilation_h, stride_h = layer.int(12, dilation_w), layer.int(13, stride_w)
    pad_right, pad_top = layer.int(15, pad_left), layer.int(14, pad_left)
    pad_bottom = layer.int(16, pad_top)
    weight_count = layer.int(6, 0)
    if min(pad_left, pad_right, pad_top, pad_bottom) < 0 or layer.int(18, 0) or layer.int(19, 0) \
            or layer.int(20, 0) or layer.int(21, 0):
        raise UnsupportedLayerError(f"{layer.name}: output padding / output size Deconvolution is not supported")
    in_channels, remainder = divmod(weight_count, out_channels * kernel_h * kernel_w)
    if remainder:
        raise UnsupportedLayerError(f"{layer.name}: weight count {weight_count} does not fit the kernel")
    kernel = weights.tagged(weight_count).reshape(out_channels, in_channels, kernel_h, kernel_w)
    inputs = [g.value(layer.inputs[0]), g.const(f"{layer.name}.weight", kernel.transpose(1, 0, 2, 3))]
    if layer.int(5, 0):
        inputs.append(g.const(f"{layer.name}.bias", weights.raw_float32(out_channels)))
    activation = layer.int(9, ACT_NONE)
    out = f"{layer.name}.deconv" if activation != ACT_NONE else g.out(layer)
    g.node("ConvTranspose", inputs, out, layer.name, kernel_shape=[kernel_h, kernel_w],
           pads=[pad_top, pad_left, pad_bottom, pad_right], strides=[stride_h, stride_w],
           dilations=[dilation_h, dilation_w])
    _activation(g, layer, out, activation)
    g.channels[g.out(layer)] = out_channels


def _pooling(g: _GraphBuilder, layer: Layer) -> None:
    """Only global average pooling (Real-CUGAN's squeeze-excitation). ncnn makes a flat C vector; here it
    stays Nx C x1x1, so the InnerProducts become 1x1 convolutions and the Mul broadcasts as ncnn's does."""
    if layer.int(0, 0) != POOL_AVERAGE or layer.int(4, 0) != 1:
        raise UnsupportedLayerError(f"{layer.name}: only global average Pooling is supported")
    channels = g.channels.get(g.value(layer.inputs[0]), 0)
    if not channels:
        raise UnsupportedLayerError(f"{layer.name}: global Pooling of an input with unknown channel count")
    index = len(g.pooled)
    computed = g.node("GlobalAveragePool", [g.value(layer.inputs[0])], f"{layer.name}.mean", layer.name)
    given = f"{POOLED_PREFIX}{index}.given"
    if g.dtype == np.float16:
        given = g.node("Cast", [given], f"{given}.fp16", f"{layer.name}.cast_given", to=TensorProto.FLOAT16)
    g.pooled.append((computed, f"{POOLED_PREFIX}{index}.given", channels))
    g.blob[layer.outputs[0]] = g.node("Where", [USE_GIVEN_POOLED, given, computed], g.out(layer),
                                      f"{layer.name}.choose")


def _inner_product(g: _GraphBuilder, layer: Layer, weights: WeightReader) -> None:
    """ncnn InnerProduct on a pooled vector -> 1x1 Conv on the Nx C x1x1 tensor."""
    out_channels, weight_count = layer.int(0, 0), layer.int(2, 0)
    if layer.int(8, 0):
        raise UnsupportedLayerError(f"{layer.name}: int8 InnerProduct is not supported")
    in_channels, remainder = divmod(weight_count, out_channels)
    if remainder:
        raise UnsupportedLayerError(f"{layer.name}: weight count {weight_count} does not fit {out_channels} outputs")
    matrix = weights.tagged(weight_count).reshape(out_channels, in_channels, 1, 1)
    inputs = [g.value(layer.inputs[0]), g.const(f"{layer.name}.weight", matrix)]
    if layer.int(1, 0):
        inputs.append(g.const(f"{layer.name}.bias", weights.raw_float32(out_channels)))
    activation = layer.int(9, ACT_NONE)
    out = f"{layer.name}.fc" if activation != ACT_NONE else g.out(layer)
    g.node("Conv", inputs, out, layer.name, kernel_shape=[1, 1])
    _activation(g, layer, out, activation)


def _crop(g: _GraphBuilder, layer: Layer) -> None:
    """ncnn Crop with starts/ends/axes arrays (9/10/11) over H and W -> Slice (a negative end counts back)."""
    starts, ends, axes = layer.array(9), layer.array(10), layer.array(11)
    if not starts or len(starts) != len(ends) or len(starts) != len(axes) or set(axes) - {-2.0, -1.0, 1.0, 2.0}:
        raise UnsupportedLayerError(f"{layer.name}: only Crop by starts/ends over height and width is supported")
    onnx_axes = [int(a) if a < 0 else int(a) + 1 for a in axes]  # ncnn CHW axis -> ONNX NCHW axis
    onnx_ends = [int(e) if e != 0 else np.iinfo(np.int64).max for e in ends]  # ncnn end 0: to the end
    args = [g.const(f"{layer.name}.{key}", np.array(values, dtype=np.int64), keep_dtype=True)
            for key, values in (("starts", [int(v) for v in starts]), ("ends", onnx_ends), ("axes", onnx_axes))]
    g.blob[layer.outputs[0]] = g.node("Slice", [g.value(layer.inputs[0]), *args], g.out(layer), layer.name)


def _prelu(g: _GraphBuilder, layer: Layer, weights: WeightReader) -> None:
    slopes = weights.raw_float32(layer.int(0, 1)).reshape(-1, 1, 1)
    g.blob[layer.outputs[0]] = g.node(
        "PRelu", [g.value(layer.inputs[0]), g.const(f"{layer.name}.slope", slopes)], g.out(layer), layer.name)


def _eltwise(g: _GraphBuilder, layer: Layer) -> None:
    if layer.int(0, ELTWISE_SUM) != ELTWISE_SUM:
        raise UnsupportedLayerError(f"{layer.name}: only Eltwise sum is supported")
    coeffs = layer.array(1) or (1.0,) * len(layer.inputs)
    terms: list[str] = []
    for i, (blob, coeff) in enumerate(zip(layer.inputs, coeffs, strict=True)):
        source = g.value(blob)
        if coeff != 1.0:
            source = g.scale(source, coeff, f"{layer.name}.scale{i}")
        terms.append(source)
    g.blob[layer.outputs[0]] = g.node("Add" if len(terms) == 2 else "Sum", terms, g.out(layer), layer.name)
    known = {g.channels.get(g.value(blob), 0) for blob in layer.inputs}
    if len(known) == 1 and 0 not in known:
        g.channels[g.out(layer)] = known.pop()


def _binary_op(g: _GraphBuilder, layer: Layer) -> None:
    op = BINARY_OPS.get(layer.int(0, 0))
    if op is None or len(layer.inputs) != 2 or layer.int(1, 0):
        raise UnsupportedLayerError(f"{layer.name}: only BinaryOp add or mul of two blobs is supported")
    g.blob[layer.outputs[0]] = g.node(
        op, [g.value(layer.inputs[0]), g.value(layer.inputs[1])], g.out(layer), layer.name)


def _interp(g: _GraphBuilder, layer: Layer) -> None:
    resize_type = layer.int(0, 0)
    scales = g.const(f"{layer.name}.scales",
                     np.array([1.0, 1.0, layer.float(1, 1.0), layer.float(2, 1.0)], dtype=np.float32),
                     keep_dtype=True)
    if layer.int(6, 0):
        raise UnsupportedLayerError(f"{layer.name}: align_corner Interp is not supported")
    attrs: dict[str, str | float]
    if resize_type == INTERP_NEAREST:
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    elif resize_type == INTERP_BICUBIC:
        attrs = {"mode": "cubic", "coordinate_transformation_mode": "half_pixel", "cubic_coeff_a": -0.75}
    else:
        raise UnsupportedLayerError(f"{layer.name}: Interp resize type {resize_type} is not supported")
    g.blob[layer.outputs[0]] = g.node(
        "Resize", [g.value(layer.inputs[0]), "", scales], g.out(layer), layer.name, **attrs)


def _pixel_shuffle(g: _GraphBuilder, layer: Layer) -> None:
    if layer.int(1, 0) != 0:
        raise UnsupportedLayerError(f"{layer.name}: only PixelShuffle mode 0 is supported")
    g.blob[layer.outputs[0]] = g.node("DepthToSpace", [g.value(layer.inputs[0])], g.out(layer), layer.name,
                                      blocksize=layer.int(0, 1), mode="CRD")


def _concat(g: _GraphBuilder, layer: Layer) -> None:
    if layer.int(0, 0) != 0:
        raise UnsupportedLayerError(f"{layer.name}: only channel Concat is supported")
    g.blob[layer.outputs[0]] = g.node("Concat", [g.value(b) for b in layer.inputs], g.out(layer),
                                      layer.name, axis=1)


def build_model(layers: Sequence[Layer], weight_data: bytes, *, precision: str = "fp32",
                metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Translate ncnn layers + weights into an ONNX model with dynamic batch, height and width."""
    g = _GraphBuilder(precision)
    weights = WeightReader(weight_data)
    input_blobs = [layer.outputs[0] for layer in layers if layer.type == "Input"]
    if len(input_blobs) != 1:
        raise UnsupportedLayerError(f"expected exactly one Input layer, found {len(input_blobs)}")
    if precision == "fp16":
        g.blob[input_blobs[0]] = g.node("Cast", [INPUT_NAME], "input.fp16", "cast_input", to=TensorProto.FLOAT16)
    else:
        g.blob[input_blobs[0]] = INPUT_NAME

    consumed: set[str] = set()
    for layer in layers:
        consumed.update(layer.inputs)
        if layer.type == "Input":
            continue
        if layer.type == "Split":
            for out in layer.outputs:
                g.blob[out] = g.value(layer.inputs[0])
        elif layer.type == "Convolution":
            _convolution(g, layer, weights)
        elif layer.type == "PReLU":
            _prelu(g, layer, weights)
        elif layer.type == "Eltwise":
            _eltwise(g, layer)
        elif layer.type == "BinaryOp":
            _binary_op(g, layer)
        elif layer.type == "Interp":
            _interp(g, layer)
        elif layer.type == "PixelShuffle":
            _pixel_shuffle(g, layer)
        elif layer.type == "Concat":
            _concat(g, layer)
        elif layer.type == "Deconvolution":
            _deconvolution(g, layer, weights)
        elif layer.type == "Pooling":
            _pooling(g, layer)
        elif layer.type == "InnerProduct":
            _inner_product(g, layer, weights)
        elif layer.type == "Crop":
            _crop(g, layer)
        else:
            raise UnsupportedLayerError(f"{layer.name}: ncnn layer type {layer.type} is not supported")
    if weights.remaining:
        raise UnsupportedLayerError(f"{weights.remaining} bytes of weights were not used by any layer")

    final = [out for layer in layers for out in layer.outputs if out not in consumed]
    if len(final) != 1:
        raise UnsupportedLayerError(f"expected one network output, found {final}")
    last = g.value(final[0])
    if precision == "fp16":
        g.node("Cast", [last], OUTPUT_NAME, "cast_output", to=TensorProto.FLOAT)
    else:
        g.node("Identity", [last], OUTPUT_NAME, "output_identity")

    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, "height", "width"])]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 3, "out_height", "out_width"])]
    if g.pooled:
        inputs.append(helper.make_tensor_value_info(USE_GIVEN_POOLED, TensorProto.BOOL, []))
    for index, (computed, given, channels) in enumerate(g.pooled):
        inputs.append(helper.make_tensor_value_info(given, TensorProto.FLOAT, [1, channels, 1, 1]))
        name = f"{POOLED_PREFIX}{index}"
        g.node("Cast", [computed], name, f"cast_{name}", to=TensorProto.FLOAT)
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", channels, 1, 1]))
    graph = helper.make_graph(g.nodes, "realesrgan", inputs, outputs, initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="upscaler-ncnn2onnx", producer_version=CONVERTER_VERSION)
    model.ir_version = 8
    for key, value in sorted((metadata or {}).items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model
