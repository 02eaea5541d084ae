"""On a GPU: forward speed per network at fp16 with the planner's tiles, how busy the GPU stays, its memory per
window pixel. The real-network side of benchmarks/gpu_busy.py (which predicts the busy figure with a stand-in).

1. `forward`: each network over photo-like inputs of 1, 4 and 12 MP (benchmarks/engine_pipeline.py), with the
   tile grid and batch the engine plans on this GPU: input MP/s (the image's pixels per forward second) and
   window MP/s (what the GPU computed, overlap and border included), second run of each (the first plans cuDNN).
2. `busy`: x4plus (--busy-network) over several photos per size and output format through the engine's three
   stages pipelined (prepare N+1 | infer N | encode N-1): forward seconds over wall seconds per image period,
   as gpu_busy.py prints them, and nvidia-smi's utilization.gpu sampled every 100 ms over the same period.
3. `memory`: host RSS once the CUDA runtime and x4plus are loaded; GPU memory one x4plus window takes (peak
   of cudaMemGetInfo sampled during the forward, after the arena gave back what it held), per window pixel:
   what planning.GPU_WORK_DIVISOR estimates (CPU bytes / 2).

    python3 benchmarks/gpu/busy.py [--networks x4plus animevideov3] [--sizes 1 4 12] \
        [--formats jpeg png webp avif] [--encoders N] [--json FILE] [--device cuda|cpu]

A dry run on a machine without a GPU:
`--device cpu --sizes 0.25 --networks animevideov3 --busy-network animevideov3 --formats jpeg`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.engine_pipeline import SIZES, drain_with_engine_pipeline, photo
from benchmarks.gpu_standin import ForwardLog
from gpu_batch.engine import Engine
from gpu_batch.engine.planning import window_bytes_per_pixel
from gpu_batch.engine.runtime import Pooled, Runner, available_gpu_memory, load_runner

IMAGES = {"0.25": 12, "1": 8, "4": 4, "12": 3}


@dataclass(frozen=True, slots=True)
class TimedRunner:
    """A real runner whose forwards are logged (wall time around the synchronous ONNX Runtime run: host-to-device
    copy, kernels, the copy back)."""

    runner: Runner
    log: ForwardLog

    @property
    def provider(self) -> str:
        return self.runner.provider

    @property
    def device(self) -> str:
        return self.runner.device

    def memory_budget(self) -> int:
        return self.runner.memory_budget()

    def pooled_means(self, image: np.ndarray, max_side: int = 512) -> Pooled | None:
        return self.runner.pooled_means(image, max_side)

    def forward(self, windows: np.ndarray, pooled: Pooled | None = None, *, last: bool = False) -> np.ndarray:
        started = time.perf_counter()
        out = self.runner.forward(windows, pooled, last=last)
        ended = time.perf_counter()
        self.log.add(started, ended, ended - started, last=last)
        return out


class Utilization:
    """nvidia-smi's utilization.gpu every 100 ms, with perf_counter timestamps."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        exe = shutil.which("nvidia-smi")
        self._process = subprocess.Popen(
            [exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
            stdout=subprocess.PIPE, text=True) if exe else None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        if self._process is None or self._process.stdout is None:
            return
        for line in self._process.stdout:
            try:
                self.samples.append((time.perf_counter(), float(line.split(",")[0])))
            except ValueError:
                continue

    def mean(self, start: float, end: float) -> float | None:
        inside = [value for at, value in self.samples if start <= at <= end]
        return sum(inside) / len(inside) if inside else None

    def stop(self) -> None:
        if self._process:
            self._process.terminate()
            self._process.wait(10)


def engine_with_log(device: str) -> tuple[Engine, ForwardLog]:
    log = ForwardLog()

    def factory(network: str, out_dtype: type[np.integer]) -> Runner:
        return TimedRunner(load_runner(network, device, out_dtype=out_dtype), log)

    return Engine(device=device, runner_factory=factory), log


def forward_speed(networks: list[str], sizes: list[str], device: str) -> list[dict[str, Any]]:
    rows = []
    print(f"{'network':13} {'size':>6} {'tile':>11} {'window':>11} {'windows':>8} {'batch':>6} {'work':>6} "
          f"{'input MP/s':>11} {'window MP/s':>12}")
    for network in networks:
        engine, log = engine_with_log(device)
        for size in sizes:
            width, height = SIZES[size]
            data = photo(width, height, 1)
            for _ in range(2):  # the first run plans cuDNN's algorithms and grows the arena
                log.spans.clear()
                inferred = engine.infer(engine.prepare(data, model=network, scale=4.0, output_format="png"))
                assert inferred.pixels is not None
                inferred.pixels.result()
            plan = engine.plan_tiles(network, width, height)
            seconds = sum(span[2] for span in log.spans)
            row = {"network": network, "size_mp": size, "tile": [plan.tile_h, plan.tile_w],
                   "window": [plan.window_h, plan.window_w], "windows": plan.windows, "batch": plan.batch,
                   "work_ratio": round(plan.work_ratio(width, height), 3),
                   "input_mps": round(width * height / seconds / 1e6, 3),
                   "window_mps": round(plan.work / seconds / 1e6, 3), "provider": inferred.provider}
            rows.append(row)
            print(f"{network:13} {size + 'MP':>6} {f'{plan.tile_h}x{plan.tile_w}':>11} "
                  f"{f'{plan.window_h}x{plan.window_w}':>11} {plan.windows:8d} {plan.batch:6d} "
                  f"{row['work_ratio']:6.3f} {row['input_mps']:11.3f} {row['window_mps']:12.3f}", flush=True)
    return rows


def busy(network: str, sizes: list[str], formats: list[str], device: str, encoders: int) -> list[dict[str, Any]]:
    rows = []
    engine, log = engine_with_log(device)
    gpu = Utilization()
    try:
        for size in sizes:
            width, height = SIZES[size]
            photos = [photo(width, height, seed) for seed in range(IMAGES[size])]
            engine.infer(engine.prepare(photos[0], model=network, scale=4.0, output_format="jpeg"))  # warm-up
            for fmt in formats:
                log.spans.clear()
                drain_with_engine_pipeline(engine, photos, fmt=fmt, model=network, encoders=encoders)
                percent, period, images = log.image_periods()
                starts = [span[0] for span in log.spans if span[3]]
                smi = gpu.mean(starts[0], starts[-1]) if len(starts) > 1 else None
                row = {"size_mp": size, "format": fmt, "images": images, "busy_percent": round(percent * 100, 1),
                       "nvidia_smi_percent": None if smi is None else round(smi, 1),
                       "seconds_per_image": round(period, 3)}
                rows.append(row)
                print(f"gpu_busy_real {size}MP {fmt} {percent * 100:.1f} {period:.2f}   # nvidia-smi "
                      f"{'-' if smi is None else f'{smi:.1f}'} %, {images} images, {encoders} encoders", flush=True)
    finally:
        gpu.stop()
    return rows


def window_memory(device: str, sides: tuple[int, ...] = (512, 1024)) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if device != "cuda" or available_gpu_memory() is None:
        print("GPU memory per window pixel: skipped (no CUDA runtime to ask)")
        return rows
    runner = load_runner("x4plus", "cuda")
    with open("/proc/self/status") as status:  # what the job's host memory holds before any image
        rss = next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS:"))
    print(f"host RSS with the CUDA runtime and the x4plus session loaded: {rss} MiB")
    rows.append({"host_rss_mib_loaded": rss})
    print(f"{'window':>7} {'GPU MiB':>8} {'bytes/window px':>16} {'planned':>8}")
    for side in sides:
        windows = np.random.default_rng(0).random((1, 3, side, side), dtype=np.float32)
        runner.forward(windows[:, :, :64, :64], last=True)  # the arena gives back what it holds
        before = available_gpu_memory() or 0
        lowest = [before]
        done = threading.Event()

        def sample(low: list[int] = lowest, finished: threading.Event = done) -> None:
            while not finished.is_set():
                low[0] = min(low[0], available_gpu_memory() or low[0])
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        runner.forward(windows, last=True)
        done.set()
        sampler.join()
        used = before - lowest[0]
        row = {"window": side, "gpu_mib": used // 2**20, "bytes_per_window_pixel": used // side**2,
               "planned": window_bytes_per_pixel("x4plus", "cuda")}
        rows.append(row)
        print(f"{side:7d} {row['gpu_mib']:8d} {row['bytes_per_window_pixel']:16d} {row['planned']:8d}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="*", default=["x4plus", "animevideov3"])
    parser.add_argument("--sizes", nargs="*", default=["1", "4", "12"], choices=list(SIZES))
    parser.add_argument("--formats", nargs="*", default=["jpeg", "png", "webp", "avif"])
    parser.add_argument("--encoders", type=int, default=max(1, min(4, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--busy-network", default="x4plus")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    began = time.perf_counter()
    print("1. forward speed, fp16 on the GPU, the engine's own tile plan (input MP/s counts the image's pixels)")
    report: dict[str, Any] = {"forward": forward_speed(args.networks, args.sizes, args.device)}
    print(f"\n2. busy, {args.busy_network}, pipelined stages, {args.encoders} encode threads on {os.cpu_count()} CPUs")
    report["busy"] = busy(args.busy_network, args.sizes, args.formats, args.device, args.encoders)
    print("\n3. GPU memory per window pixel (x4plus fp16 with the fused post-processing)")
    report["memory"] = window_memory(args.device)
    print(f"# {time.perf_counter() - began:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
