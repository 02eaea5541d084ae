"""Real-ESRGAN upscaling engine on ONNX Runtime: image bytes in, upscaled image bytes out. No AWS here."""

from __future__ import annotations

from .engine import Engine, InferredImage, PreparedImage, UpscaleResult
from .errors import EngineError, EngineOutOfMemoryError, OutputNotEncodableError, UndecodableImageError

__all__ = [
    "Engine",
    "EngineError",
    "EngineOutOfMemoryError",
    "InferredImage",
    "OutputNotEncodableError",
    "PreparedImage",
    "UndecodableImageError",
    "UpscaleResult",
]
