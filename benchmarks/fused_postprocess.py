"""Post-processing in the ONNX graph vs in numpy on the host, on the CPU (the choice runtime.load_runner makes).

Two tables, best of `--repeats`, interleaved:
1. the post-processing alone on one window's network output (colour fix, clamp, rounding, cast; 4x): the
   fused nodes run by ONNX Runtime's CPU provider vs postprocess.on_host;
2. a whole window through a real network: the fused session vs the raw session + numpy.

    .venv/bin/python benchmarks/fused_postprocess.py [--windows 272 544 1088] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine_speed import best_times
from gpu_batch.engine import postprocess
from gpu_batch.engine.convert import INPUT_NAME, OUTPUT_NAME
from gpu_batch.engine.runtime import load_runner, session_options


def post_only_session(factor: int) -> ort.InferenceSession:
    """The fused post-processing with the network replaced by an input carrying its output."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["raw"], [OUTPUT_NAME])], "post",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", 3, "h", "w"]),
         helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["n", 3, "fh", "fw"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = postprocess.fuse(model, factor=factor, shrink=0, padded=False, adds_nearest_input=False, colour_fix=True,
                             out_dtype=np.uint8)
    return ort.InferenceSession(model.SerializeToString(), session_options("cpu"), providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", nargs="*", type=int, default=[272, 544, 1088])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--networks", nargs="*", default=["animevideov3=256", "x4plus=64"], help="NAME=WINDOW")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    session = post_only_session(4)
    print("1. post-processing alone, one window at 4x (seconds)")
    print(f"{'window':>7} {'numpy':>8} {'ORT graph':>10} {'numpy / graph':>14}")
    for side in args.windows:
        windows = rng.random((1, 3, side, side), dtype=np.float32)
        raw = np.clip(windows.repeat(4, 2).repeat(4, 3) + rng.normal(0, 0.02, (1, 3, 4 * side, 4 * side))
                      .astype(np.float32), -0.1, 1.1)
        best = best_times({
            "numpy": lambda w=windows, r=raw: postprocess.on_host(w, r, 4, colour_fix=True, out_dtype=np.uint8),
            "graph": lambda w=windows, r=raw: session.run([postprocess.PIXELS_NAME], {INPUT_NAME: w, "raw": r}),
        }, args.repeats)
        ratio = best["numpy"] / best["graph"]
        print(f"{side:7d} {best['numpy']:8.3f} {best['graph']:10.3f} {ratio:13.2f}x", flush=True)

    print("\n2. one window through the network on the CPU (seconds)")
    print(f"{'network':13} {'window':>7} {'raw + numpy':>12} {'fused':>7} {'raw / fused':>12}")
    for item in args.networks:
        name, side = item.split("=")
        fused, host = load_runner(name, "cpu", fused=True), load_runner(name, "cpu", fused=False)
        windows = rng.random((1, 3, int(side), int(side)), dtype=np.float32)
        best = best_times({"host": lambda w=windows, r=host: r.forward(w),
                           "fused": lambda w=windows, r=fused: r.forward(w)}, args.repeats)
        print(f"{name:13} {int(side):7d} {best['host']:12.3f} {best['fused']:7.3f} "
              f"{best['host'] / best['fused']:11.2f}x", flush=True)


if __name__ == "__main__":
    main()
