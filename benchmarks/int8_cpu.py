"""Would int8 buy the CPU speed goal? Static int8 quantization of x4plus, its speed and what it does to pictures.

Quantizes the fp32 CPU model with ONNX Runtime's static QDQ quantizer (int8 per-channel weights, uint8
per-tensor activations, MinMax ranges from degraded crops of scikit-image pictures that the quality set does not
use), then prints:
  * raw network time at SIZE (each side's own edge pad: ours 24, ncnn's reference 10), ORT fp32 / ORT int8 /
    ncnn, best of N interleaved, 2 threads;
  * on the quality set (benchmarks/quality.py's degraded photos): PSNR of int8 against fp32, PSNR against the
    ground truth, BRISQUE, and the noise drawn into a flat patch of sky (mean |pixel - 5x5 box mean| in the
    rocket photo's sky; the fp32 network leaves that sky smooth);
  * docs/images/int8-sky.png: that sky, fp32 | int8 | ground truth, 3x enlarged.
The int8 model is an experiment: the engine does not build or use it (docs/engine.md says why).

    .venv/bin/python benchmarks/int8_cpu.py [--size 192] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from PIL import Image
from skimage import data

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.engine_speed import best_times, load_ncnn_net  # noqa: E402
from benchmarks.quality import PHOTOS, _install_brisque_shims, centre_crop, degrade  # noqa: E402
from gpu_batch.engine.models import ensure_model, model_spec  # noqa: E402

CALIBRATION = ("hubble_deep_field", "immunohistochemistry", "retina", "camera", "brick", "grass", "page", "clock")
SKY = (slice(0, 60), slice(20, 100))  # rows/cols of the rocket's 256x256 output that are plain sky
OURS_PAD, NCNN_PAD = model_spec("x4plus").border_pad, 10


def to_batch(rgb: np.ndarray, pad: int) -> np.ndarray:
    padded = np.pad(rgb.astype(np.float32) / 255.0, [(pad, pad), (pad, pad), (0, 0)], mode="reflect")
    return np.ascontiguousarray(padded.transpose(2, 0, 1)[None])


def calibration_batches(size: int = 64, per_picture: int = 2) -> list[np.ndarray]:
    """Crops of pictures outside the quality set, degraded like real web photos (half size, JPEG q50)."""
    batches = []
    for seed, name in enumerate(CALIBRATION):
        picture = getattr(data, name)()
        rgb = Image.fromarray(np.stack([picture] * 3, -1) if picture.ndim == 2 else picture[..., :3])
        rgb = rgb.resize((rgb.width // 2, rgb.height // 2), Image.Resampling.BICUBIC)
        stream = io.BytesIO()
        rgb.save(stream, "JPEG", quality=50)
        array = np.asarray(Image.open(stream).convert("RGB"))
        rng = np.random.default_rng(seed)
        for _ in range(per_picture):
            top, left = rng.integers(0, array.shape[0] - size), rng.integers(0, array.shape[1] - size)
            batches.append(to_batch(array[top : top + size, left : left + size], 0))
    return batches


class _Reader(CalibrationDataReader):
    def __init__(self, batches: list[np.ndarray]) -> None:
        self._items = iter([{"input": batch} for batch in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize(fp32: Path, target: Path) -> None:
    quantize_static(str(fp32), str(target), _Reader(calibration_batches()), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, extra_options={"ActivationSymmetric": False})


def cpu_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ncnn_runner(threads: int):
    import ncnn

    net = load_ncnn_net("x4plus", threads)

    def run(batch: np.ndarray) -> None:
        extractor = net.create_extractor()
        extractor.input("data", ncnn.Mat(np.ascontiguousarray(batch[0])))
        extractor.extract("output")

    return run


def upscale(session: ort.InferenceSession, rgb: np.ndarray) -> np.ndarray:
    out = session.run(None, {"input": to_batch(rgb, OURS_PAD)})[0][0]
    crop = 4 * OURS_PAD
    return np.rint(np.clip(out[:, crop:-crop, crop:-crop].transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)


def quality_photos() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, 256x256 ground truth, its degraded input) for each photo of benchmarks/quality.py."""
    for name in PHOTOS:
        truth = centre_crop(getattr(data, name)(), 256)
        yield name, truth, np.asarray(Image.open(io.BytesIO(degrade(truth))).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def flat_noise(image: np.ndarray) -> float:
    """Mean |pixel - its 5x5 box mean| over the sky patch: 0 for a smooth sky."""
    patch = image[SKY].astype(np.float64)
    padded = np.pad(patch, [(2, 2), (2, 2), (0, 0)], mode="edge")
    box = sum(padded[y : y + patch.shape[0], x : x + patch.shape[1]] for y in range(5) for x in range(5)) / 25
    return float(np.abs(patch - box).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    fp32_path = ensure_model("x4plus", precision="fp32")
    with tempfile.TemporaryDirectory() as folder:
        int8_path = Path(folder) / "x4plus-int8.onnx"
        started = time.perf_counter()
        quantize(fp32_path, int8_path)
        print(f"quantized in {time.perf_counter() - started:.0f} s: {int8_path.stat().st_size / 2**20:.1f} MiB")
        fp32, int8 = cpu_session(fp32_path, args.threads), cpu_session(int8_path, args.threads)

        photo = np.asarray(Image.fromarray(data.astronaut()).resize((args.size, args.size), Image.Resampling.LANCZOS))
        ours, reference = to_batch(photo, OURS_PAD), to_batch(photo, NCNN_PAD)
        ncnn_run = ncnn_runner(args.threads)
        sides = {"ORT fp32": lambda: fp32.run(None, {"input": ours}),
                 "ORT int8": lambda: int8.run(None, {"input": ours}),
                 "ncnn fp32": lambda: ncnn_run(reference)}
        best = best_times(sides, args.repeats)
        print(f"\nraw network, {args.size}x{args.size}, {args.threads} threads, best of {args.repeats}")
        for name, seconds in best.items():
            print(f"  {name:10} {seconds:7.2f} s   ncnn/this {best['ncnn fp32'] / seconds:5.2f}x")

        brisque = _install_brisque_shims()
        print(f"\n{'photo':10} {'int8 vs fp32':>12} {'fp32 vs truth':>13} {'int8 vs truth':>13} "
              f"{'BRISQUE fp32':>12} {'BRISQUE int8':>12}")
        for name, truth, rgb in quality_photos():
            a, b = upscale(fp32, rgb), upscale(int8, rgb)
            print(f"{name:10} {psnr(a, b):9.2f} dB {psnr(a, truth):10.2f} dB {psnr(b, truth):10.2f} dB "
                  f"{brisque.score(a):12.1f} {brisque.score(b):12.1f}")
            if name == "rocket":
                sky = (a, b, truth)
        fp32_noise, int8_noise, truth_noise = (flat_noise(image) for image in sky)
        print(f"\nrocket sky noise (mean |x - 5x5 mean|): fp32 {fp32_noise:.2f}, int8 {int8_noise:.2f}, "
              f"ground truth {truth_noise:.2f}")
        strip = np.concatenate([image[SKY] for image in sky], axis=1)
        target = REPO / "docs" / "images" / "int8-sky.png"
        Image.fromarray(strip).resize((strip.shape[1] * 3, strip.shape[0] * 3), Image.Resampling.NEAREST).save(target)
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
