"""ncnn `.param` + `.bin` -> ONNX converter for the shipped Real-ESRGAN, RealSR and Real-CUGAN weights."""

from __future__ import annotations

from pathlib import Path

import onnx

from .ncnn_param import Layer, load_param, parse_param
from .onnx_graph import CONVERTER_VERSION, INPUT_NAME, OUTPUT_NAME, POOLED_PREFIX, USE_GIVEN_POOLED, build_model

__all__ = ["CONVERTER_VERSION", "INPUT_NAME", "OUTPUT_NAME", "POOLED_PREFIX", "USE_GIVEN_POOLED", "Layer", "convert",
           "load_param", "parse_param"]


def convert(param_path: Path, bin_path: Path, *, precision: str = "fp32",
            metadata: dict[str, str] | None = None) -> bytes:
    """Serialized ONNX model for one ncnn network; the same inputs always give the same bytes."""
    model: onnx.ModelProto = build_model(load_param(param_path), bin_path.read_bytes(), precision=precision,
                                         metadata=metadata)
    return model.SerializeToString(deterministic=True)
