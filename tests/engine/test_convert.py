"""ncnn -> ONNX conversion: parser, weight reader, cache, and equality with the ncnn reference runtime."""

from __future__ import annotations

import struct

import ncnn
import numpy as np
import onnxruntime as ort
import pytest

from gpu_batch.engine.convert import convert, parse_param
from gpu_batch.engine.convert.ncnn_bin import TAG_FP16, WeightFormatError, WeightReader
from gpu_batch.engine.convert.ncnn_param import ParamFormatError
from gpu_batch.engine.models import ensure_model, model_status, ncnn_files, read_manifest

PARAM = """7767517
3 3
Input            in0   0 1 data
Convolution      conv  1 1 data c 0=4 1=3 4=1 5=1 6=108 9=2 -23310=1,2.000000e-01
Eltwise          add   2 1 c c out 0=1 -23301=2,2.000000e-01,1.000000e+00
"""


def test_param_parser_reads_scalars_arrays_and_blobs() -> None:
    layers = parse_param(PARAM)
    conv = layers[1]
    assert [layer.type for layer in layers] == ["Input", "Convolution", "Eltwise"]
    assert conv.inputs == ("data",) and conv.outputs == ("c",)
    assert conv.params[0] == 4 and conv.params[6] == 108 and conv.params[9] == 2
    assert conv.params[10] == (0.2,)  # -23310 is array id 10
    assert layers[2].params[1] == (0.2, 1.0)


def test_param_parser_rejects_bad_files() -> None:
    with pytest.raises(ParamFormatError):
        parse_param("123\n1 1\nInput in 0 1 data\n")
    with pytest.raises(ParamFormatError):
        parse_param("7767517\n2 1\nInput in 0 1 data\n")  # says 2 layers, has 1


def test_weight_reader_fp16_tag_alignment_and_raw_floats() -> None:
    fp16 = np.array([1.5, -2.0, 0.25], dtype="<f2")
    blob = struct.pack("<I", TAG_FP16) + fp16.tobytes() + b"\0\0" + np.array([3.0], "<f4").tobytes()
    reader = WeightReader(blob)
    np.testing.assert_array_equal(reader.tagged(3), [1.5, -2.0, 0.25])
    np.testing.assert_array_equal(reader.raw_float32(1), [3.0])  # the 2 alignment bytes were skipped
    assert reader.remaining == 0
    with pytest.raises(WeightFormatError):
        WeightReader(struct.pack("<I", 0x12345678) + b"\0" * 8).tagged(2)
    with pytest.raises(WeightFormatError):
        WeightReader(b"\0" * 4).raw_float32(2)


def test_conversion_is_deterministic() -> None:
    param, weights = ncnn_files("animevideov3")
    assert convert(param, weights) == convert(param, weights)


def test_cache_builds_verifies_and_rebuilds(tmp_path) -> None:
    path = ensure_model("animevideov3", model_dir=tmp_path)
    entry = read_manifest(tmp_path)[path.name]
    assert model_status("animevideov3", "fp32", tmp_path).built
    assert entry["sha256"] == model_status("animevideov3", "fp32", tmp_path).sha256
    built_at = path.stat().st_mtime_ns
    assert ensure_model("animevideov3", model_dir=tmp_path).stat().st_mtime_ns == built_at  # cached

    original = path.read_bytes()
    path.write_bytes(original[:-10] + b"corrupted!")  # checksum mismatch -> rebuilt
    assert not model_status("animevideov3", "fp32", tmp_path).built
    assert ensure_model("animevideov3", model_dir=tmp_path).read_bytes() == original
    path.unlink()  # missing -> rebuilt
    assert ensure_model("animevideov3", model_dir=tmp_path).read_bytes() == original


def _ncnn_reference(name: str, chw: np.ndarray) -> np.ndarray:
    param, weights = ncnn_files(name)
    net = ncnn.Net()
    net.opt.num_threads = 2
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    net.load_param(str(param))
    net.load_model(str(weights))
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(np.ascontiguousarray(chw)))
    _, result = extractor.extract("output")
    return np.array(result)


def _onnx(name: str, precision: str, chw: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(ensure_model(name, precision=precision)), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": chw[None]})[0][0]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["x4plus", "x4plus-anime", "animevideov3"])
def test_onnx_matches_ncnn_on_a_real_photo(name: str, astronaut, tools) -> None:
    # the same input into both networks (the reference runner's 10 px reflect pad included)
    photo = tools.crop(astronaut, 36, 36).astype(np.float32) / 255.0
    padded = np.pad(photo, [(10, 10), (10, 10), (0, 0)], mode="reflect").transpose(2, 0, 1).copy()
    reference = _ncnn_reference(name, padded)
    ours = _onnx(name, "fp32", padded)
    assert ours.shape == reference.shape == (3, 56 * 4, 56 * 4)
    assert np.abs(ours - reference).max() <= 1 / 255


def test_fp16_model_stays_close_to_fp32(astronaut, tools) -> None:
    photo = (tools.crop(astronaut, 32, 32).astype(np.float32) / 255.0).transpose(2, 0, 1).copy()
    full, half = _onnx("animevideov3", "fp32", photo), _onnx("animevideov3", "fp16", photo)
    assert np.abs(full - half).max() <= 2 / 255


def test_fp16_model_has_fp16_weights_and_fp32_io() -> None:
    import onnx

    model = onnx.load(str(ensure_model("animevideov3", precision="fp16")))
    weights = [t for t in model.graph.initializer if t.name.endswith(".weight")]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3]  # dynamic batch, height, width


def test_fp32_model_keeps_scales_as_depthwise_convs_and_fp16_as_mul():
    """The CPU model must not contain scalar Muls (they leave ORT's NCHWc layout); the GPU one may."""
    import onnx

    from gpu_batch.engine.models import ensure_model

    fp32 = onnx.load(str(ensure_model("x4plus", precision="fp32")))
    fp16 = onnx.load(str(ensure_model("x4plus", precision="fp16")))
    assert not [n for n in fp32.graph.node if n.op_type == "Mul"]
    depthwise = [n for n in fp32.graph.node if n.op_type == "Conv"
                 and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(depthwise) == 23  # one per RRDB residual
    assert len([n for n in fp16.graph.node if n.op_type == "Mul"]) == 23
