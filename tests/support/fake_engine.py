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


@dataclass(frozen=True)
class FakePrepared:
    image: Image.Image
    model: str
    scale: float
    format: str
    strength: float

    @property
    def nbytes(self) -> int:
        return self.image.width * self.image.height * 3


@dataclass(frozen=True)
class FakeInferred:
    prepared: FakePrepared
    image: Image.Image

    @property
    def nbytes(self) -> int:
        return self.image.width * self.image.height * 3


@dataclass
class FakeEngine:
    fail_with: BaseException | None = None
    during_upscale: Callable[[], None] | None = None  # called inside infer (to interleave other actors)
    during_encode: Callable[[], None] | None = None  # called inside encode, before it records the image encoded
    calls: list[dict[str, Any]] = field(default_factory=list)  # one per network run
    qualities: list[int | None] = field(default_factory=list)  # one per encode
    preloaded: list[str] = field(default_factory=list)
    peak_bytes: int = 0  # what peak_host_bytes answers (0: the decoded image's bytes)
    stages: list[tuple[str, str]] = field(default_factory=list)  # ("infer" | "encoded", model) in order

    def preload(self, model: str, scale: float = 4.0) -> None:
        if model not in self.preloaded:
            self.preloaded.append(model)

    def provider(self, model: str) -> str:
        return "CPUExecutionProvider"

    def prepare(self, data: bytes, *, model: str = "x4plus", scale: float = 4.0, output_format: str | None = None,
                strength: float = 1.0) -> FakePrepared:
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except Exception as exc:
            raise UndecodableImageError(f"cannot decode: {exc}") from exc
        fmt = output_format or ("jpeg" if img.format == "JPEG" else "png")
        return FakePrepared(img.convert("RGB"), model, scale, fmt, strength)

    def peak_host_bytes(self, prepared: FakePrepared, tile_size: int = 0) -> int:
        return self.peak_bytes or prepared.nbytes

    def infer(self, prepared: FakePrepared, *, tile_size: int = 0,
              progress: Callable[[int, int], None] | None = None) -> FakeInferred:
        self.stages.append(("infer", f"{prepared.image.width}x{prepared.image.height}"))
        self.calls.append({"model": prepared.model, "scale": prepared.scale, "output_format": prepared.format,
                           "strength": prepared.strength})
        if self.during_upscale:
            self.during_upscale()
        if self.fail_with is not None:
            raise self.fail_with
        for done in range(1, 5):
            if progress:
                progress(done, 4)
        size = (round(prepared.image.width * prepared.scale), round(prepared.image.height * prepared.scale))
        return FakeInferred(prepared, prepared.image.resize(size))

    def encode(self, inferred: FakeInferred, *, quality: int | None = None) -> UpscaleResult:
        prepared, fmt = inferred.prepared, inferred.prepared.format
        self.qualities.append(quality)
        buf = io.BytesIO()
        inferred.image.save(buf, fmt.upper(), **({"quality": quality} if quality else {}))
        if self.during_encode:
            self.during_encode()
        self.stages.append(("encoded", f"{prepared.image.width}x{prepared.image.height}"))
        return UpscaleResult(data=buf.getvalue(), format=fmt, content_type=CONTENT_TYPES[fmt],
                             input_width=prepared.image.width, input_height=prepared.image.height,
                             output_width=inferred.image.width, output_height=inferred.image.height,
                             model=prepared.model, scale=prepared.scale, provider="CPUExecutionProvider",
                             decode_seconds=0.001, inference_seconds=0.002, encode_seconds=0.001)

    def upscale_bytes(self, data: bytes, *, model: str = "x4plus", scale: float = 4.0,
                      output_format: str | None = None, quality: int | None = None, tile_size: int = 0,
                      progress: Callable[[int, int], None] | None = None, strength: float = 1.0) -> UpscaleResult:
        prepared = self.prepare(data, model=model, scale=scale, output_format=output_format, strength=strength)
        return self.encode(self.infer(prepared, tile_size=tile_size, progress=progress), quality=quality)


def image_bytes(width: int = 24, height: int = 16, fmt: str = "PNG") -> bytes:
    img = Image.new("RGB", (width, height))
    img.putdata([((x * 10) % 256, (y * 15) % 256, 128) for y in range(height) for x in range(width)])
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()
