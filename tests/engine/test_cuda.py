"""The CUDA path: fp16 model, IO binding, several tiles per run.

These run only where onnxruntime has a CUDA provider (the worker image; the GPU check in benchmarks/gpu/).
CI machines have none, so each test here reports itself skipped with that reason rather than passing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from gpu_batch.engine import Engine
from gpu_batch.engine.models import model_spec
from gpu_batch.engine.planning import grid_plan
from gpu_batch.engine.runtime import CUDA, cuda_available, load_runner
from gpu_batch.engine.tiling import upscale_tiled

pytestmark = pytest.mark.skipif(not cuda_available(), reason="onnxruntime has no CUDAExecutionProvider here")

MODELS = ("x4plus", "animevideov3")


@pytest.fixture(scope="module")
def cuda_engine() -> Engine:
    return Engine(device="cuda")


@pytest.mark.parametrize("model", MODELS)
def test_cuda_runs_the_fp16_model_on_the_gpu(model) -> None:
    runner = load_runner(model, "cuda")
    assert (runner.provider, runner.precision) == (CUDA, "fp16")
    batch = np.random.default_rng(0).random((2, 3, 40, 48), dtype=np.float32)
    out = runner.forward(batch)
    assert out.shape == (2, 160, 192, 3) and out.dtype == np.uint8
    assert 0 < out.mean() < 255


@pytest.mark.parametrize("model", MODELS)
def test_cuda_fp16_output_matches_the_cpu_fp32_output(cuda_engine, engine, astronaut, tools, model) -> None:
    """fp16 activations cost 62-67 dB against fp32 when the same fp16 model runs on the CPU (measured);
    45 dB, the tiling bar, leaves room for cuDNN's own accumulation order."""
    image = Image.fromarray(tools.crop(astronaut, 64, 64))
    on_gpu = np.asarray(cuda_engine.upscale_image(image, model=model))
    on_cpu = np.asarray(engine.upscale_image(image, model=model))
    assert cuda_engine.provider(model) == CUDA
    assert tools.psnr(on_gpu, on_cpu) >= 45
    # no colour cast from the fp16 path: channel means within 1/255
    assert np.abs(on_gpu.mean(axis=(0, 1)) - on_cpu.mean(axis=(0, 1))).max() <= 1.0


@pytest.mark.parametrize(("model", "size", "tile"), [("animevideov3", (96, 96), 32), ("x4plus", (32, 96), 32)])
def test_cuda_tiled_output_equals_whole_image_output(cuda_engine, astronaut, tools, model, size, tile) -> None:
    image = Image.fromarray(tools.crop(astronaut, *size))
    whole = np.asarray(cuda_engine.upscale_image(image, model=model, tile_size=max(size)))
    tiled = np.asarray(cuda_engine.upscale_image(image, model=model, tile_size=tile))
    assert tools.psnr(tiled, whole) >= 45
    assert tools.seam_psnr(tiled, whole, tile) >= 45


def test_cuda_batches_several_tiles_per_run_without_changing_the_picture(cuda_engine, astronaut) -> None:
    plan = cuda_engine.plan_tiles("animevideov3", 256, 256, tile_size=64)
    assert plan.batch > 1  # the GPU is fed several tiles per run
    image = np.ascontiguousarray(astronaut[:128, :128].transpose(2, 0, 1), dtype=np.float32) / 255.0
    runner = load_runner("animevideov3", "cuda")
    spec = model_spec("animevideov3")
    pad = cuda_engine.tile_pad("animevideov3")
    tiles = grid_plan(128, 128, 32, 32, pad=pad, border=spec.border_pad)

    def forward(windows: np.ndarray, last: bool) -> np.ndarray:
        return runner.forward(windows, last=last)

    common = {"factor": 4, "pad": pad, "out_dtype": np.uint8, "border": spec.border_pad}
    one_by_one = upscale_tiled(image, forward, plan=tiles, **common)
    batched = upscale_tiled(image, forward, plan=dataclasses.replace(tiles, batch=plan.batch), **common)
    assert np.abs(one_by_one.astype(int) - batched.astype(int)).max() <= 1
