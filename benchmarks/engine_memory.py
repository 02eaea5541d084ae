"""Host memory of the engine, each figure from a fresh process (peak RSS, reset between stages).

1. Host RAM per 1024 px tile on a GPU host, fused post-processing vs today's numpy path: one 1024x1024 image
   as one window through `infer` with the GPU stand-in (benchmarks/gpu_standin.py), the rise of peak RSS
   over what the prepared image already held.
2. Peak RSS at the largest input intake accepts (4096x4096 = 16.7 MP at 4x; 2896x2896 for WebP, whose outputs
   stop at 134 MP) for each output format, through prepare, infer (stand-in forward, an A10G's memory budget)
   and encode, against the job's memory (Settings.worker_memory_mib; goal <= memory.JOB_MEMORY_SHARE), next
   to the estimate gpu_batch.engine.memory makes.
3. `--cpu-work`: the CPU runtime's working memory per window pixel with the fused graph (the numbers
   planning.CPU_WORK_BYTES_PER_PIXEL budgets with): peak RSS after one window of the real network.

    .venv/bin/python benchmarks/engine_memory.py [--formats jpeg png webp avif tiff] [--cpu-work] [--no-largest]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.settings import Settings
from gpu_batch.engine.memory import JOB_MEMORY_SHARE

# The largest input per format: WebP's is 134 MP out, the most intake accepts (common.formats.OUTPUT_MAX_PIXELS)
LARGEST = {"webp": (2896, 2896)}
LARGEST_DEFAULT = (4096, 4096)


def rss_mib() -> tuple[int, int]:
    """(current, peak) resident MiB of this process."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) // 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def probe(case: dict[str, object]) -> dict[str, object]:
    """Runs in a fresh process: one image through the engine's stages, peak RSS per stage."""
    import dataclasses

    import numpy as np

    import benchmarks.gpu_standin as standin

    profile = standin.PROFILES["a10g"]
    standin.PROFILES["fast"] = dataclasses.replace(profile, name="fast", x4plus_mps=1e4)  # same memory, no wait
    engine = standin.standin_engine("fast", log=standin.ForwardLog(), postprocess=str(case["postprocess"]),
                                    settings=Settings(tile_size=int(case.get("tile", 0))))
    data = Path(str(case["path"])).read_bytes()
    fmt = str(case["format"])
    result: dict[str, object] = {"loaded": rss_mib()[0]}
    reset_peak()
    prepared = engine.prepare(data, model="x4plus", scale=4.0, output_format=fmt)
    result["prepared"], result["prepare_peak"] = rss_mib()
    result["prepared_nbytes"] = prepared.nbytes
    result["estimate"] = engine.peak_host_bytes(prepared) // 2**20
    reset_peak()
    inferred = engine.infer(prepared)
    assert inferred.pixels is not None
    inferred.pixels.result()
    result["inferred"], result["infer_peak"] = rss_mib()
    result["inferred_nbytes"] = inferred.nbytes
    del prepared
    if case.get("encode", True):
        reset_peak()
        started = time.perf_counter()
        encoded = engine.encode(inferred)
        result["encode_seconds"] = round(time.perf_counter() - started, 1)
        result["encoded"], result["encode_peak"] = rss_mib()
        result["bytes"] = len(encoded.data)
    del np
    return result


def run_probe(case: dict[str, object]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--probe", json.dumps(case)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"probe {case} failed: {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def photo_file(folder: Path, width: int, height: int) -> Path:
    from benchmarks.engine_pipeline import photo

    path = folder / f"photo-{width}x{height}.jpg"
    if not path.exists():
        path.write_bytes(photo(width, height, 7))
    return path


CPU_WORK_PROBE = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from benchmarks.engine_memory import rss_mib
from gpu_batch.engine.runtime import load_runner
runner = load_runner({model!r}, "cpu")
loaded = rss_mib()[1]
runner.forward(np.random.default_rng(0).random((1, 3, {window}, {window}), dtype=np.float32))
print(loaded, rss_mib()[1])
"""


def cpu_work(models: list[str], tiles: list[int]) -> None:
    from gpu_batch.engine.planning import CPU_WORK_BYTES_PER_PIXEL, tile_pad

    print(f"\n{'model':13} {'tile':>5} {'window':>7} {'loaded MiB':>11} {'peak MiB':>9} {'work MiB':>9} "
          f"{'bytes/window px':>16} {'planned':>8}")
    for model in models:
        for tile in tiles:
            window = tile + 2 * tile_pad(model)
            code = CPU_WORK_PROBE.format(root=str(Path(__file__).resolve().parents[1]), model=model, window=window)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            loaded, peak = (int(v) for v in out.stdout.split())
            work = peak - loaded
            print(f"{model:13} {tile:5d} {window:7d} {loaded:11d} {peak:9d} {work:9d} "
                  f"{work * 2**20 / window**2:16.0f} {CPU_WORK_BYTES_PER_PIXEL.get(model, 0):8d}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", nargs="*", default=["jpeg", "png", "webp", "avif", "tiff"])
    parser.add_argument("--cpu-work", action="store_true")
    parser.add_argument("--no-largest", action="store_true")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(json.loads(args.probe))))
        return

    job_mib = Settings().worker_memory_mib
    with tempfile.TemporaryDirectory() as folder:
        tile_photo = photo_file(Path(folder), 1024, 1024)
        print("1. host RAM per 1024 px tile (one 1072x1072 window at 4x, GPU stand-in), rise over the prepared image")
        print(f"{'post-processing':16} {'infer peak - prepared MiB':>26} {'output held MiB':>16}")
        for post in ("graph", "host"):
            found = run_probe({"path": str(tile_photo), "format": "jpeg", "postprocess": post, "tile": 1024,
                               "encode": False})
            print(f"{post:16} {int(found['infer_peak']) - int(found['prepared']):26d} "
                  f"{int(found['inferred_nbytes']) // 2**20:16d}", flush=True)
        if not args.no_largest:
            print(f"\n2. peak RSS at the largest input, x4plus 4x (job memory {job_mib} MiB, goal <= "
                  f"{int(job_mib * JOB_MEMORY_SHARE)} MiB)")
            print(f"{'format':6} {'input':>10} {'loaded':>7} {'prepare':>8} {'infer':>7} {'encode':>7} {'peak':>6} "
                  f"{'of job':>7} {'image':>6} {'estimate':>9} {'encode s':>9} {'MB out':>7}  MiB")
            for fmt in args.formats:
                width, height = LARGEST.get(fmt, LARGEST_DEFAULT)
                found = run_probe({"path": str(photo_file(Path(folder), width, height)), "format": fmt,
                                   "postprocess": "graph"})
                peaks = [int(found[k]) for k in ("prepare_peak", "infer_peak", "encode_peak")]
                peak = max(peaks)
                image = peak - int(found["loaded"])
                print(f"{fmt:6} {f'{width}x{height}':>10} {found['loaded']:>7} {peaks[0]:8d} {peaks[1]:7d} "
                      f"{peaks[2]:7d} {peak:6d} {peak / job_mib:7.0%} {image:6d} {found['estimate']:>9} "
                      f"{found['encode_seconds']:>9} {int(found['bytes']) / 1e6:7.0f}", flush=True)
    if args.cpu_work:
        cpu_work(["x4plus", "animevideov3"], [64, 128])


if __name__ == "__main__":
    main()
