"""Network-only CUDA throughput of a model under a few ONNX Runtime CUDA provider settings and tile shapes.

Prints effective input megapixels/s (the tile's centre, without its overlap pad) for each combination, so
one GPU session can pick the engine's CUDA defaults (runtime.py) from one run. Two timings per cell:
`host` feeds a host array and copies the output back, as the engine does; `device` keeps both on the GPU
(the ceiling the host copies leave). Needs onnxruntime with the CUDA provider (benchmarks/gpu/check.sh).

    python3 benchmarks/gpu/cuda_matrix.py [--model x4plus] [--shapes 256x4 512x2 1024x1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.engine_speed import best_times
from gpu_batch.engine.convert import INPUT_NAME, OUTPUT_NAME
from gpu_batch.engine.models import ensure_model, model_spec

OPTION_GRID = {"prefer_nhwc": ["0", "1"], "cudnn_conv_algo_search": ["HEURISTIC", "EXHAUSTIVE"]}


def session(path: str, options: dict[str, str]) -> ort.InferenceSession:
    settings = ort.SessionOptions()
    settings.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    settings.log_severity_level = 3
    return ort.InferenceSession(path, settings, providers=[("CUDAExecutionProvider", options)])


def time_cell(sess: ort.InferenceSession, batch: np.ndarray, repeats: int) -> tuple[float, float]:
    def host() -> None:
        binding = sess.io_binding()
        binding.bind_cpu_input(INPUT_NAME, batch)
        binding.bind_output(OUTPUT_NAME, "cuda")
        sess.run_with_iobinding(binding)
        binding.copy_outputs_to_cpu()

    on_device = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)
    binding = sess.io_binding()
    binding.bind_ortvalue_input(INPUT_NAME, on_device)
    binding.bind_output(OUTPUT_NAME, "cuda")

    def device() -> None:
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()

    best = best_times({"host": host, "device": device}, repeats)
    return best["host"], best["device"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="x4plus")
    parser.add_argument("--shapes", nargs="*", default=["256x4", "512x2", "1024x1"], help="TILExBATCH")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SystemExit(f"onnxruntime {ort.__version__} has no CUDA provider: {ort.get_available_providers()}")
    path = str(ensure_model(args.model, precision="fp16"))
    pad = model_spec(args.model).min_tile_pad
    print(f"onnxruntime {ort.__version__}, model {args.model} fp16, tile pad {pad}")
    header = f"{'prefer_nhwc':>11} {'algo search':>12} {'tile x batch':>12} {'host MP/s':>10} {'device MP/s':>12}"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for values in itertools.product(*OPTION_GRID.values()):
        options = dict(zip(OPTION_GRID, values, strict=True))
        try:
            sess = session(path, options)
        except Exception as exc:  # an option this build does not know is a result, not a crash
            print(f"{values[0]:>11} {values[1]:>12} session failed: {exc}")
            continue
        for shape in args.shapes:
            tile, batch = (int(part) for part in shape.split("x"))
            window = tile + 2 * pad
            inputs = rng.random((batch, 3, window, window), dtype=np.float32)
            try:
                host, device = time_cell(sess, inputs, args.repeats)
            except Exception as exc:
                print(f"{values[0]:>11} {values[1]:>12} {shape:>12} failed: {str(exc)[:120]}")
                continue
            megapixels = batch * tile * tile / 1e6
            print(f"{values[0]:>11} {values[1]:>12} {shape:>12} {megapixels / host:10.2f} {megapixels / device:12.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
