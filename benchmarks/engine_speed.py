"""End-to-end speed and peak memory: our ONNX Runtime engine vs the ncnn package, same model, same threads.

Both sides do the whole job: decode a JPEG, run the network (ours: tiled, colour fix, border pad 10;
ncnn: the reference runner's 10 px reflect pad, one run over the whole image), quantize and encode a
JPEG at quality 95. Timings are interleaved (ort, ncnn, ort, ncnn, ...) and the best of N is kept, so a
noisy shared machine hurts both alike; peak RSS is measured in a fresh child process per cell.
On a machine with a GPU the same script adds CUDA fp16 rows (our engine only: ncnn here is CPU-only).
Where the ncnn package is missing (the GPU check machine, see benchmarks/gpu/), its rows are left out.

    .venv/bin/python benchmarks/engine_speed.py [--sizes x4plus=64,128 animevideov3=128,256] [--repeats 3]
        [--sides ort ncnn cuda] [--raw]

A size list names a network (`illustration-x2=256,512` runs Real-CUGAN's 2x network at its native scale; its
ncnn side pads as realcugan-ncnn-vulkan does). `--raw` adds rows for the network alone on one tensor (both
sides get the same padded input, no decode/tiling/encode), so the engine's border and tiling overhead shows
as the gap between the raw and end-to-end ratios. Each table row also gives the network's FLOP per input
pixel (multiply-adds x 2 of every Conv/ConvTranspose, from ONNX shape inference at that size).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from skimage import data

DEFAULT_SIZES = {"x4plus": [64, 128], "animevideov3": [128, 256]}


def photo_jpeg(size: int) -> bytes:
    """A real photo (scikit-image's astronaut) resized to size x size, JPEG quality 90."""
    image = Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.LANCZOS)
    stream = io.BytesIO()
    image.save(stream, "JPEG", quality=90)
    return stream.getvalue()


class OrtSide:
    def __init__(self, model: str, device: str) -> None:
        from gpu_batch.engine import Engine
        from gpu_batch.engine.models import network_for

        self.engine = Engine(device=device)
        self.engine.preload(model)
        self.model = model
        self.scale = network_for(model, 4.0).scale

    def __call__(self, jpeg: bytes) -> bytes:
        return self.engine.upscale_bytes(jpeg, model=self.model, scale=self.scale, output_format="jpeg",
                                         quality=95).data


def reference_input(model: str, rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """The reference runner's padded CHW input for HxWx3 `rgb`, and the output pixels to crop per side:
    realcugan-ncnn-vulkan's prepadding + alignment for Real-CUGAN (nothing to crop: the network eats it),
    the 10 px reflect pad of the other ncnn runners."""
    from gpu_batch.engine.models import network_for

    spec = network_for(model, 4.0)
    if spec.shrink:
        extra = [-(side + 2 * spec.shrink) % spec.align for side in rgb.shape[:2]]
        padded = np.pad(rgb, [(spec.shrink, spec.shrink + extra[0]), (spec.shrink, spec.shrink + extra[1]), (0, 0)],
                        mode="reflect")
        return np.ascontiguousarray(padded.transpose(2, 0, 1)), 0
    padded = np.pad(rgb, [(10, 10), (10, 10), (0, 0)], mode="reflect")
    return np.ascontiguousarray(padded.transpose(2, 0, 1)), 10 * spec.scale


def blob_names(model: str) -> tuple[str, str]:
    from gpu_batch.engine.models import network_for

    return ("in0", "out0") if network_for(model, 4.0).shrink else ("data", "output")


def flop_per_input_pixel(model: str, size: int) -> float:
    """2 x multiply-adds of every Conv and ConvTranspose for one size x size input, per input pixel."""
    import onnx

    from gpu_batch.engine.models import ensure_model, network_for

    spec = network_for(model, 4.0)
    graph_model = onnx.load(str(ensure_model(spec.name)))
    padded, _ = reference_input(model, np.zeros((size, size, 3), np.float32))
    dims = graph_model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, *padded.shape), strict=True):
        dim.dim_value = value
    inferred = onnx.shape_inference.infer_shapes(graph_model, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    weights = {t.name: int(np.prod(t.dims)) for t in graph_model.graph.initializer}
    macs = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv" and len(shapes.get(node.output[0], [])) == 4:
            macs += weights[node.input[1]] * int(np.prod(shapes[node.output[0]][2:]))
        elif node.op_type == "ConvTranspose":
            macs += weights[node.input[1]] * int(np.prod(shapes[node.input[0]][2:]))
    return 2 * macs / (size * size)


def raw_sides(model: str, size: int, threads: int, sides: list[str]) -> dict[str, Callable[[], object]]:
    """The network alone on the same padded tensor: ORT session vs ncnn extractor (CPU sides only)."""
    import onnxruntime as ort

    from gpu_batch.engine.models import ensure_model, network_for
    from gpu_batch.engine.runtime import session_options

    rgb = np.asarray(Image.open(io.BytesIO(photo_jpeg(size))).convert("RGB"), dtype=np.float32) / 255.0
    chw, _ = reference_input(model, rgb)
    runs: dict[str, Callable[[], object]] = {}
    if "ort" in sides:
        options = session_options("cpu")
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(ensure_model(network_for(model, 4.0).name)), options,
                                       providers=["CPUExecutionProvider"])
        feeds: dict[str, np.ndarray] = {"input": chw[None]}
        for item in session.get_inputs()[1:]:  # Real-CUGAN: its own global means
            feeds[item.name] = np.array(False) if item.type == "tensor(bool)" else np.zeros(item.shape, np.float32)
        runs["ort raw"] = lambda: session.run(["output"], feeds)
    if "ncnn" in sides:
        import ncnn

        net = load_ncnn_net(model, threads)
        names = blob_names(model)

        def ncnn_run() -> object:
            extractor = net.create_extractor()
            extractor.input(names[0], ncnn.Mat(chw))
            return extractor.extract(names[1])

        runs["ncnn raw"] = ncnn_run
    return runs


def load_ncnn_net(model: str, threads: int) -> Any:
    """The `ncnn` package running the shipped .param/.bin on the CPU: the reference side of every comparison."""
    import ncnn

    from gpu_batch.engine.models import ncnn_files

    param, weights = ncnn_files(model, fetch=True)
    net = ncnn.Net()
    net.opt.num_threads = threads
    net.opt.use_vulkan_compute = False  # CPU, as ours; ncnn's other defaults (fp16 storage, winograd) kept
    net.load_param(str(param))
    net.load_model(str(weights))
    return net


def best_times(sides: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best of `repeats` seconds per side, interleaved so that load on a shared host hurts every side alike."""
    best = dict.fromkeys(sides, float("inf"))
    for run in sides.values():
        run()  # warm-up: planning, compilation and arena growth are not throughput
    for _ in range(repeats):
        for name, run in sides.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


class NcnnSide:
    def __init__(self, model: str, threads: int) -> None:
        import ncnn

        from gpu_batch.engine.models import network_for

        self.ncnn = ncnn
        self.net = load_ncnn_net(model, threads)
        self.model = model
        self.scale = network_for(model, 4.0).scale
        self.adds_nearest_input = network_for(model, 4.0).adds_nearest_input

    def __call__(self, jpeg: bytes) -> bytes:
        rgb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float32) / 255.0
        padded, crop = reference_input(self.model, rgb)
        names = blob_names(self.model)
        extractor = self.net.create_extractor()
        extractor.input(names[0], self.ncnn.Mat(padded))
        _, out = extractor.extract(names[1])
        height, width = rgb.shape[0] * self.scale, rgb.shape[1] * self.scale
        result = np.asarray(out)[:, crop : crop + height, crop : crop + width].transpose(1, 2, 0)
        if self.adds_nearest_input:  # realcugan-ncnn-vulkan's 4x post-processing
            result = result + rgb.repeat(self.scale, axis=0).repeat(self.scale, axis=1)
        stream = io.BytesIO()
        Image.fromarray(np.rint(np.clip(result, 0, 1) * 255).astype(np.uint8)).save(stream, "JPEG", quality=95)
        return stream.getvalue()


def available_sides() -> list[str]:
    """ort always; ncnn where the package is installed; cuda where onnxruntime has the CUDA provider."""
    from importlib.util import find_spec

    from gpu_batch.engine.runtime import cuda_available

    return ["ort"] + (["ncnn"] if find_spec("ncnn") else []) + (["cuda"] if cuda_available() else [])


def make_side(side: str, model: str, threads: int):
    if side == "ncnn":
        return NcnnSide(model, threads)
    return OrtSide(model, "cuda" if side == "cuda" else "cpu")


def peak_rss_mib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def probe_rss(side: str, model: str, size: int, threads: int) -> int:
    """Peak RSS (MiB) of a fresh process that loads the model and upscales one image."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child would report this process's peak
    code = (f"import sys; sys.path.insert(0, {os.getcwd()!r}); "
            f"from benchmarks.engine_speed import make_side, photo_jpeg, peak_rss_mib; "
            f"run = make_side({side!r}, {model!r}, {threads}); run(photo_jpeg({size})); "
            "print(peak_rss_mib())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_sizes = [f"{model}={','.join(map(str, sizes))}" for model, sizes in DEFAULT_SIZES.items()]
    parser.add_argument("--sizes", nargs="*", default=default_sizes)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--sides", nargs="*", choices=["ort", "ncnn", "cuda"],
                        help="engines to time (default: every one this machine has)")
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--raw", action="store_true", help="also time the network alone (see above)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    available = available_sides()
    sides_wanted = args.sides or available
    missing = set(sides_wanted) - set(available)
    if missing:
        parser.error(f"not available on this machine: {', '.join(sorted(missing))}")
    rows = []
    print(f"threads={args.threads} repeats={args.repeats} sides={','.join(sides_wanted)}", flush=True)
    header = (f"{'model':22} {'size':>9} {'side':9} {'best s':>8} {'MP/s':>8} {'peak RSS MiB':>13} {'ORT/ncnn':>9} "
              f"{'MFLOP/px':>9}")
    print(header)
    print("-" * len(header))
    for spec in args.sizes:
        model, sizes = spec.split("=")
        sides = {name: make_side(name, model, args.threads) for name in sides_wanted}
        for size in (int(s) for s in sizes.split(",")):
            jpeg = photo_jpeg(size)
            runs = {name: (lambda run=run, jpeg=jpeg: run(jpeg)) for name, run in sides.items()}
            if args.raw:
                runs.update(raw_sides(model, size, args.threads, sides_wanted))
            best = best_times(runs, args.repeats)
            mflop = flop_per_input_pixel(model, size) / 1e6
            for name in runs:
                raw = name.endswith(" raw")
                rss = 0 if args.no_rss or raw else probe_rss(name, model, size, args.threads)
                mps = size * size / best[name] / 1e6
                reference = "ncnn raw" if raw else "ncnn"
                ratio = best[reference] / best[name] if reference in best else None
                rows.append({"model": model, "size": size, "side": name, "seconds": best[name], "mp_per_s": mps,
                             "peak_rss_mib": rss, "speedup_vs_ncnn": ratio, "mflop_per_input_pixel": mflop})
                print(f"{model:22} {f'{size}x{size}':>9} {name:9} {best[name]:8.2f} {mps:8.4f} {rss:13d} "
                      f"{f'{ratio:.2f}x' if ratio is not None else '-':>9} {mflop:9.1f}", flush=True)
    print(f"(peak RSS of this process, all engines loaded: {peak_rss_mib()} MiB)")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(rows, stream, indent=2)


if __name__ == "__main__":
    main()
