"""The worker's engine API with Pillow resizing instead of a network: fast, deterministic, fails on cue."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from gpu_batch.engine import UpscaleResult
from gpu_batch.engine.codec import CONTENT_TYPES
from gpu_batch.engine.errors import UndecodableImageError


@dataclass
class FakeEngine:
    fail_with: BaseException | None = None
    during_upscale: Callable[[], None] | None = None  # called inside upscale_bytes (to interleave other actors)
    calls: list[dict[str, Any]] = field(default_factory=list)
    preloaded: list[str] = field(default_factory=list)

    def preload(self, model: str, scale: float = 4.0) -> None:
        if model not in self.preloaded:
            self.preloaded.append(model)

    def provider(self, model: str) -> str:
        return "CPUExecutionProvider"

    def upscale_bytes(self, data: bytes, *, model: str = "x4plus", scale: float = 4.0,
                      output_format: str | None = None, quality: int | None = None, tile_size: int = 0,
                      progress: Callable[[int, int], None] | None = None, strength: float = 1.0) -> UpscaleResult:
        self.calls.append({"model": model, "scale": scale, "output_format": output_format, "quality": quality,
                           "strength": strength})
        if self.during_upscale:
            self.during_upscale()
        if self.fail_with is not None:
            raise self.fail_with
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except Exception as exc:
            raise UndecodableImageError(f"cannot decode: {exc}") from exc
        fmt = output_format or ("jpeg" if img.format == "JPEG" else "png")
        out_size = (round(img.width * scale), round(img.height * scale))
        for done in range(1, 5):
            if progress:
                progress(done, 4)
        buf = io.BytesIO()
        img.convert("RGB").resize(out_size).save(buf, fmt.upper(), **({"quality": quality} if quality else {}))
        return UpscaleResult(data=buf.getvalue(), format=fmt, content_type=CONTENT_TYPES[fmt],
                             input_width=img.width, input_height=img.height, output_width=out_size[0],
                             output_height=out_size[1], model=model, scale=scale, provider="CPUExecutionProvider",
                             decode_seconds=0.001, inference_seconds=0.002, encode_seconds=0.001)


def image_bytes(width: int = 24, height: int = 16, fmt: str = "PNG") -> bytes:
    img = Image.new("RGB", (width, height))
    img.putdata([((x * 10) % 256, (y * 15) % 256, 128) for y in range(height) for x in range(width)])
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()
