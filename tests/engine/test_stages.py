"""The engine's three stages (prepare | infer | encode) for a pipelined worker: same bytes as one call, errors
where they belong, encodes safe in parallel, the GPU runner's memory and arena contract."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image

from gpu_batch.engine import (
    Engine,
    EngineError,
    InferredImage,
    OutputNotEncodableError,
    PreparedImage,
    UndecodableImageError,
    codec,
)
from gpu_batch.engine.runtime import Pooled

FAST = "animevideov3"


def _inputs(astronaut, tools) -> list[tuple[bytes, str | None]]:
    rgba = Image.fromarray(tools.crop(astronaut, 20, 28)).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((28, 20)))
    return [(tools.encode(Image.fromarray(tools.crop(astronaut, 24, 32)), "JPEG", quality=90), None),
            (tools.encode(rgba, "PNG"), "png"),
            (tools.encode(Image.fromarray(tools.crop(astronaut, 18, 22, top=40)).convert("L"), "PNG"), "webp"),
            (tools.encode(Image.fromarray(tools.crop(astronaut, 16, 16, top=80)), "PNG"), "avif"),
            (tools.encode(Image.fromarray(tools.crop(astronaut, 16, 20, top=120)), "PNG"), "tiff")]


@pytest.mark.parametrize("scale", [4.0, 2.5])
def test_prepare_infer_encode_give_the_bytes_of_upscale_bytes(engine, astronaut, tools, scale) -> None:
    for data, fmt in _inputs(astronaut, tools):
        whole = engine.upscale_bytes(data, model=FAST, scale=scale, output_format=fmt)
        prepared = engine.prepare(data, model=FAST, scale=scale, output_format=fmt)
        inferred = engine.infer(prepared)
        staged = engine.encode(inferred)
        assert staged.data == whole.data and staged.format == whole.format
        assert (staged.output_width, staged.output_height) == (whole.output_width, whole.output_height)
        assert staged.inference_seconds > 0 and staged.encode_seconds > 0 and staged.decode_seconds > 0


def test_stages_report_what_they_hold_and_the_worker_logs(engine, astronaut, tools) -> None:
    data = tools.encode(Image.fromarray(tools.crop(astronaut, 24, 32)), "JPEG", quality=90)
    prepared = engine.prepare(data, model=FAST, scale=4.0, output_format="png")
    assert isinstance(prepared, PreparedImage)
    assert (prepared.input_width, prepared.input_height, prepared.output_width, prepared.output_height) == (
        32, 24, 128, 96)
    assert (prepared.format, prepared.model, prepared.scale) == ("png", FAST, 4.0)
    assert prepared.nbytes >= 32 * 24 * 3 * 4  # the float32 planes the network reads
    inferred = engine.infer(prepared)
    assert isinstance(inferred, InferredImage)
    assert (inferred.output_width, inferred.output_height, inferred.format) == (128, 96, "png")
    assert inferred.nbytes >= 128 * 96 * 3  # the network's uint8 pixels
    engine.encode(inferred)
    assert inferred.nbytes < 128 * 96 * 3  # encode took the pixels
    with pytest.raises(EngineError, match="encoded already"):
        engine.encode(inferred)


def test_bad_input_fails_in_prepare(engine, tools) -> None:
    with pytest.raises(UndecodableImageError):
        engine.prepare(b"not an image", model=FAST, scale=4.0, output_format=None)
    with pytest.raises(EngineError, match="strength"):
        engine.prepare(tools.encode(Image.new("RGB", (8, 8)), "PNG"), model=FAST, scale=4.0, output_format=None,
                       strength=2.0)
    with pytest.raises(OutputNotEncodableError, match="16383"):
        engine.prepare(tools.encode(Image.new("RGB", (4100, 8)), "PNG"), model=FAST, scale=4.0, output_format="webp")


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "avif", "tiff"])
def test_encodes_of_different_images_run_safely_in_parallel(engine, astronaut, tools, fmt) -> None:
    datas = [tools.encode(Image.fromarray(tools.crop(astronaut, 20 + 4 * i, 24, top=50 * i)), "PNG")
             for i in range(4)]

    def inferred() -> list[InferredImage]:
        return [engine.infer(engine.prepare(d, model=FAST, scale=4.0, output_format=fmt)) for d in datas]

    sequential = [engine.encode(i).data for i in inferred()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = [r.data for r in pool.map(engine.encode, inferred() + inferred())]
    assert parallel == sequential * 2
    assert len(set(sequential)) == len(datas)  # different images, different files


def test_webp_partition_overflow_is_retried_slower_then_refused(monkeypatch) -> None:
    methods: list[int] = []
    original = Image.Image.save

    def save(self, fp, format=None, **params):
        if format == "WEBP":
            methods.append(params["method"])
            if params["method"] < limit[0]:
                raise ValueError("encoding error 6")
        original(self, fp, format, **params)

    limit = [codec.WEBP_SAFE_METHOD]
    monkeypatch.setattr(Image.Image, "save", save)
    pixels = np.zeros((16, 16, 3), np.uint8)
    data = codec.encode(pixels, None, fmt="webp", bit_depth=8, quality=95, icc=None, exif=None, notes=[])
    assert data[8:12] == b"WEBP" and methods == [codec.WEBP_METHOD, codec.WEBP_SAFE_METHOD]
    limit[0] = 99
    with pytest.raises(OutputNotEncodableError, match="more detail than WebP"):
        codec.encode(pixels, None, fmt="webp", bit_depth=8, quality=95, icc=None, exif=None, notes=[])
    assert codec.webp_method(4_000_000) == codec.WEBP_METHOD and codec.webp_method(100_000_000) >= 3


@dataclass
class _GpuLikeRunner:
    """A runner that claims a GPU: nearest 4x, and what the engine told it."""

    budget: int
    lasts: list[bool] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    provider: str = "FakeGpu"
    device: str = "cuda"

    def memory_budget(self) -> int:
        return self.budget

    def pooled_means(self, image: np.ndarray, max_side: int = 512) -> Pooled | None:
        return None

    def forward(self, windows: np.ndarray, pooled: Pooled | None = None, *, last: bool = False) -> np.ndarray:
        self.lasts.append(last)
        self.shapes.append(windows.shape)
        pixels = np.rint(windows * 255).astype(np.uint8).transpose(0, 2, 3, 1)
        return pixels.repeat(4, axis=1).repeat(4, axis=2)


def test_gpu_runners_plan_from_their_budget_and_release_after_each_image(tools) -> None:
    runner = _GpuLikeRunner(budget=20 << 30)
    engine = Engine(device="cuda", runner_factory=lambda network, out_dtype: runner)
    data = tools.encode(Image.new("RGB", (1155, 866), (90, 160, 30)), "PNG")
    prepared = engine.prepare(data, model="x4plus", scale=4.0, output_format="jpeg")
    assert engine.plan_tiles("x4plus", 1155, 866).windows == 1
    assert engine.peak_host_bytes(prepared) >= 1155 * 866 * 16 * 3  # at least the output's pixels
    inferred = engine.infer(prepared)
    assert inferred.windows == 1 and inferred.work_ratio < 1.15 and inferred.provider == "FakeGpu"
    assert runner.lasts == [True] and runner.shapes == [(1, 3, 866 + 48, 1155 + 48)]
    out = np.asarray(tools.decode(engine.encode(inferred).data))
    assert out.shape == (866 * 4, 1155 * 4, 3) and np.abs(out.astype(int) - (90, 160, 30)).max() <= 3

    runner.lasts.clear()
    small = _GpuLikeRunner(budget=2 << 30)
    engine = Engine(device="cuda", runner_factory=lambda network, out_dtype: small)
    inferred = engine.infer(engine.prepare(data, model="x4plus", scale=4.0, output_format="jpeg"))
    assert inferred.windows > 1 and small.lasts[-1] and not any(small.lasts[:-1])  # the arena is released once
    assert np.abs(np.asarray(tools.decode(engine.encode(inferred).data)).astype(int) - (90, 160, 30)).max() <= 3


def test_the_gpu_stand_in_engine_runs_the_real_stages(tools) -> None:
    """benchmarks/gpu_standin.py, which benchmarks/gpu_busy.py predicts GPU time with, stays runnable."""
    from benchmarks.gpu_standin import PROFILES, ForwardLog, standin_engine

    log = ForwardLog()
    engine = standin_engine("h100", log=log)
    result = engine.upscale_bytes(tools.encode(Image.new("RGB", (64, 48), (10, 20, 30)), "PNG"), model="x4plus",
                                  output_format="jpeg")
    assert (result.output_width, result.output_height, result.provider) == (256, 192, "GpuStandIn(h100)")
    [(start, end, seconds, first)] = log.spans
    assert first and seconds == pytest.approx((64 + 48) * (48 + 48) / (PROFILES["h100"].x4plus_mps * 1e6))
    assert end - start >= seconds
