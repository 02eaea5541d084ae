"""Tiled inference equals whole-image inference, fails whole on errors, and is safe across threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from gpu_batch.engine import EngineError, EngineOutOfMemoryError
from gpu_batch.engine.models import model_spec
from gpu_batch.engine.planning import grid_plan
from gpu_batch.engine.tiling import tile_spots, upscale_tiled, upscale_with_retry


def test_tile_spots_cover_the_image_with_one_tile_shape() -> None:
    spots = tile_spots(100, 70, 32, 32)
    covered = np.zeros((100, 70), dtype=int)
    for spot in spots:
        assert 0 <= spot.y <= 100 - 32 and 0 <= spot.x <= 70 - 32  # same shape, never past the edge
        covered[spot.y : spot.y + 32, spot.x : spot.x + 32] += 1
    assert covered.min() >= 1
    assert len(spots) == 4 * 3


def _nearest4(batch: np.ndarray, last: bool = False) -> np.ndarray:
    """A stand-in forward: nearest 4x, quantized, NHWC, as the fused graph returns pixels."""
    return np.rint(batch * 255).astype(np.uint8).repeat(4, axis=2).repeat(4, axis=3).transpose(0, 2, 3, 1)


def _plan(width: int, height: int, tile: int, pad: int, batch: int = 1, border: int = 10):
    return grid_plan(width, height, tile, tile, pad=pad, border=border, batch=batch)


@pytest.mark.parametrize(("tile", "channels"), [(16, 3), (24, 1), (64, 3)])
def test_tiles_land_where_they_belong(tile, channels) -> None:
    image = np.random.default_rng(1).random((channels, 37, 53), dtype=np.float32)
    lasts: list[bool] = []

    def forward(batch: np.ndarray, last: bool) -> np.ndarray:
        lasts.append(last)
        return _nearest4(batch)

    out = upscale_tiled(image, forward, factor=4, plan=_plan(53, 37, tile, 5, batch=3), pad=5, border=10,
                        out_dtype=np.uint8)
    expected = np.rint(image.transpose(1, 2, 0) * 255).astype(np.uint8).repeat(4, 0).repeat(4, 1)
    np.testing.assert_array_equal(out, np.broadcast_to(expected, out.shape))  # gray feeds all three channels
    assert lasts[-1] and not any(lasts[:-1])  # the forward knows the image's last batch (arena release)


@pytest.mark.slow
@pytest.mark.parametrize(("model", "size", "tile"), [("animevideov3", (96, 96), 32), ("x4plus", (32, 96), 32)])
def test_tiled_output_equals_whole_image_output(engine, astronaut, tools, model, size, tile) -> None:
    image = Image.fromarray(tools.crop(astronaut, *size))
    whole = np.asarray(engine.upscale_image(image, model=model, tile_size=max(size)))
    tiled = np.asarray(engine.upscale_image(image, model=model, tile_size=tile))
    assert engine.tile_pad(model) >= engine.settings.tile_pad == 24
    # the tile windows must not see the whole image, or this would compare a run with itself
    assert tile + 2 * engine.tile_pad(model) < size[1] + 2 * model_spec(model).border_pad
    assert tools.psnr(tiled, whole) >= 45
    assert tools.seam_psnr(tiled, whole, tile) >= 45


def test_out_of_memory_retries_with_smaller_tiles_and_gives_a_whole_image() -> None:
    image = np.random.default_rng(2).random((3, 64, 64), dtype=np.float32)
    seen: list[tuple[int, ...]] = []

    def picky(batch: np.ndarray, last: bool) -> np.ndarray:
        seen.append(batch.shape)
        if batch.shape[0] > 1 or batch.shape[2] > 40:
            raise EngineOutOfMemoryError("simulated out of memory")
        return _nearest4(batch)

    notes: list[str] = []
    out = upscale_with_retry(image, picky, factor=4, plan=_plan(64, 64, 64, 4, batch=4), pad=4, border=10,
                             out_dtype=np.uint8, on_retry=notes.append).result()
    expected = np.rint(image.transpose(1, 2, 0) * 255).astype(np.uint8).repeat(4, 0).repeat(4, 1)
    np.testing.assert_array_equal(out, expected)
    assert notes and max(shape[2] for shape in seen[-4:]) <= 40


def test_out_of_memory_at_the_smallest_tile_raises_instead_of_a_partial_image() -> None:
    image = np.zeros((3, 64, 64), dtype=np.float32)

    def always_oom(batch: np.ndarray, last: bool) -> np.ndarray:
        raise EngineOutOfMemoryError("simulated out of memory")

    with pytest.raises(EngineOutOfMemoryError, match="even with"):
        upscale_with_retry(image, always_oom, factor=4, plan=_plan(64, 64, 64, 4, batch=2), pad=4, border=10,
                           out_dtype=np.uint8)


def test_a_failing_tile_fails_the_whole_call() -> None:
    calls = []

    def fails_third(batch: np.ndarray, last: bool) -> np.ndarray:
        calls.append(1)
        if len(calls) == 3:
            raise EngineError("inference failed")
        return _nearest4(batch)

    with pytest.raises(EngineError, match="inference failed"):
        upscale_with_retry(np.zeros((3, 64, 64), np.float32), fails_third, factor=4, plan=_plan(64, 64, 16, 2),
                           pad=2, border=10, out_dtype=np.uint8)


@pytest.mark.slow
def test_concurrent_calls_on_one_engine_match_sequential_calls(engine, astronaut, tools) -> None:
    inputs = [tools.encode(Image.fromarray(tools.crop(astronaut, 36 + 8 * i, 44, top=60 * i)), "PNG")
              for i in range(3)]
    sequential = [engine.upscale_bytes(data, model="animevideov3", tile_size=32).data for data in inputs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(
            lambda data: engine.upscale_bytes(data, model="animevideov3", tile_size=32).data, inputs * 2))
    assert concurrent == sequential * 2


def test_cpu_tiles_follow_available_memory(engine, monkeypatch) -> None:
    import gpu_batch.engine.engine as engine_module
    from gpu_batch.engine.planning import window_bytes_per_pixel

    monkeypatch.setattr(engine_module, "available_host_memory", lambda: 64 << 30)
    roomy = engine.plan_tiles("x4plus", 4000, 3000)
    monkeypatch.setattr(engine_module, "available_host_memory", lambda: 1 << 30)
    tight = engine.plan_tiles("x4plus", 4000, 3000)
    assert roomy.tile_h <= 512 and tight.window_h * tight.window_w < roomy.window_h * roomy.window_w
    assert tight.window_h * tight.window_w * window_bytes_per_pixel("x4plus", "cpu") <= (1 << 30) // 2
    assert engine.plan_tiles("x4plus", 4000, 3000, tile_size=96).tile_h == 96  # an explicit size wins


def test_a_cuda_session_that_falls_back_to_cpu_uses_the_fp32_model():
    """onnxruntime without a usable CUDA provider silently runs on the CPU: never with the fp16 model."""
    from gpu_batch.engine.runtime import CPU, load_runner

    runner = load_runner("animevideov3", "cuda")  # this machine has no CUDA provider
    assert (runner.provider, runner.precision) == (CPU, "fp32")
