"""A GPU stand-in for the engine's network forward, for benchmarks that predict GPU time without a GPU.

`standin_engine(profile)` is a real `Engine` (decode, planning, tiling, placement, post-processing choice,
encode: all the production code) whose runner factory loads `StandInRunner`s instead of ONNX Runtime
sessions. A stand-in forward sleeps, holding no GIL, for as long as the named GPU would take for that batch
of windows, and returns pixels of the right shape and dtype: a bicubic upscale of a window of the image, so
encoders see photo-like content (benchmarks/encoder_effort.py compares it with real network output). With
`postprocess="host"` (today's design) the engine's real numpy post-processing runs on a float32 output, as
before the fused graph. Nothing here is imported by gpu_batch/.

Forward speed, in input megapixels per second of x4plus-class networks (RRDBNet, 17.9 M MAC per input pixel):

* A100, TensorRT fp16: ~2.3 MP/s, the published figure for x4plus-class networks the issue quotes (not
  measured by this project).
* ONNX Runtime's CUDA provider at ~0.7x of TensorRT: ASSUMPTION (the issue's planning figure; the GPU kit,
  benchmarks/gpu/busy.py, measures the real one).
* A10G (g5) and L4 (g6): ~3.5x slower than an A100: ASSUMPTION, the same for both (spec sheets: A100 312 dense
  fp16 tensor TFLOPS and 2 TB/s; A10 125 and 600 GB/s; L4 121 and 300 GB/s: 2.5-6x below the A100 depending
  on whether a layer is compute- or memory-bound).
* H100 SXM (p5): 2x an A100: ASSUMPTION, the middle of NVIDIA's published MLPerf Inference range (Hopper
  1.5-2.5x Ampere on most networks; its fp16 peak is 3.2x, 989 vs 312 dense TFLOPS).

Other networks scale by their multiply-accumulates per input pixel (counted from the converted graphs), times an
efficiency below 1 for the compact ones, which are more memory-bound on a GPU (ASSUMPTION).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from common.settings import Settings
from gpu_batch.engine import Engine
from gpu_batch.engine.models import model_spec
from gpu_batch.engine.postprocess import on_host
from gpu_batch.engine.runtime import GPU_MEMORY_SHARE, Pooled, Runner

A100_TENSORRT_X4PLUS_MPS = 2.3
ORT_OF_TENSORRT = 0.7
A100_OVER_A10G = 3.5
H100_OVER_A100 = 2.0
X4PLUS_MAC_PER_PIXEL = 17.93e6
# multiply-accumulates per input pixel (counted from the converted ONNX graphs), GPU efficiency vs x4plus
NETWORK_COST = {"x4plus": (17.93e6, 1.0), "photo-jpeg": (17.93e6, 1.0), "x4plus-anime": (5.71e6, 0.9),
                "animevideov3": (0.62e6, 0.35), "cugan-x2": (1.11e6, 0.5), "cugan-x4": (1.53e6, 0.5)}
CUDA_CONTEXT_GIB = 0.6  # the CUDA context and the fp16 weights, off the top of the GPU's memory


@dataclass(frozen=True, slots=True)
class GpuProfile:
    name: str
    gpu: str
    instance: str  # the AWS instance the worker would run on
    host_vcpus: int  # vCPUs per GPU on that instance
    memory_gib: float
    x4plus_mps: float  # input MP/s of an x4plus-class network with ONNX Runtime fp16

    def network_mps(self, network: str) -> float:
        spec = model_spec(network)
        macs, efficiency = NETWORK_COST[f"cugan-x{spec.scale}" if spec.shrink else spec.name]
        return self.x4plus_mps * X4PLUS_MAC_PER_PIXEL / macs * efficiency

    def memory_budget(self) -> int:
        """What the engine's planner would get from runtime.load_runner on this GPU."""
        return int((self.memory_gib - CUDA_CONTEXT_GIB) * 2**30 * GPU_MEMORY_SHARE)


_A100_ORT = A100_TENSORRT_X4PLUS_MPS * ORT_OF_TENSORRT
PROFILES = {
    "a10g": GpuProfile("a10g", "NVIDIA A10G 24 GB", "g5.xlarge", 4, 24.0, _A100_ORT / A100_OVER_A10G),
    "l4": GpuProfile("l4", "NVIDIA L4 24 GB", "g6.xlarge", 4, 24.0, _A100_ORT / A100_OVER_A10G),
    "h100": GpuProfile("h100", "NVIDIA H100 80 GB SXM", "p5.48xlarge (1 of 8 GPUs)", 24, 80.0,
                       _A100_ORT * H100_OVER_A100),
}


@dataclass
class ForwardLog:
    """Every stand-in forward: (start, end, modelled GPU seconds, first of its image), perf_counter seconds."""

    spans: list[tuple[float, float, float, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _image_done: bool = True

    def add(self, start: float, end: float, seconds: float, *, last: bool) -> None:
        with self.lock:
            self.spans.append((start, end, seconds, self._image_done))
            self._image_done = last

    def image_periods(self) -> tuple[float, float, int]:
        """(busy fraction, seconds per image, images) over whole image periods, while images flow: from the first
        forward of the first image to the first forward of the last (one image alone: its own forwards)."""
        with self.lock:
            spans = list(self.spans)
        starts: list[float] = []
        forward: list[float] = []
        for start, _end, seconds, first in spans:
            if first:
                starts.append(start)
                forward.append(0.0)
            forward[-1] += seconds
        if len(starts) < 2:
            wall = spans[-1][1] - spans[0][0] if spans else 0.0
            return (sum(forward) / wall if wall else 0.0), wall, len(starts)
        wall = starts[-1] - starts[0]
        return sum(forward[:-1]) / wall, wall / (len(starts) - 1), len(starts)


@dataclass(frozen=True, slots=True)
class StandInRunner:
    """engine.runtime.Runner for one network on a modelled GPU."""

    network: str
    profile: GpuProfile
    out_dtype: type[np.integer]
    log: ForwardLog
    fused: bool = True

    @property
    def provider(self) -> str:
        return f"GpuStandIn({self.profile.name})"

    @property
    def device(self) -> str:
        return "cuda"

    def memory_budget(self) -> int:
        return self.profile.memory_budget()

    def pooled_means(self, image: np.ndarray, max_side: int = 512) -> Pooled | None:
        return None  # Real-CUGAN's shared means: one small forward, not modelled

    def forward(self, windows: np.ndarray, pooled: Pooled | None = None, *, last: bool = False) -> np.ndarray:
        spec = model_spec(self.network)
        n, _, height, width = windows.shape
        content = _content(windows[0], spec.scale, self.out_dtype, float_copy=not self.fused)
        started = time.perf_counter()
        extra = 2 * spec.shrink + spec.align - 1
        seconds = n * (height + extra) * (width + extra) / (self.profile.network_mps(self.network) * 1e6)
        time.sleep(seconds)
        self.log.add(started, time.perf_counter(), seconds, last=last)
        if self.fused:
            return np.broadcast_to(content, (n, *content.shape))
        # today: the float32 output copied back from the device, post-processed in numpy on the host
        raw = np.broadcast_to(content, (n, *content.shape))
        return on_host(windows, raw, spec.scale, colour_fix=True, out_dtype=self.out_dtype)


# One output per window shape, made from the first window of that shape a stand-in sees (a bicubic upscale:
# photo-like content for the encoders) before its modelled time starts, so the stand-in's own CPU work never
# lands on the GPU's time; every later window of that shape returns it (encoders do not look at which).
_contents: dict[tuple[int, int, str, bool], np.ndarray] = {}
_contents_lock = threading.Lock()


def _content(window: np.ndarray, factor: int, out_dtype: type[np.integer], *, float_copy: bool) -> np.ndarray:
    _, height, width = window.shape
    key = (height, width, np.dtype(out_dtype).name, float_copy)
    with _contents_lock:
        found = _contents.get(key)
        if found is None:
            small = Image.fromarray(np.rint(window.transpose(1, 2, 0) * 255).astype(np.uint8), "RGB")
            big = np.asarray(small.resize((width * factor, height * factor), Image.Resampling.BICUBIC))
            found = big if out_dtype == np.uint8 else big.astype(out_dtype) * 257
            if float_copy:  # the raw network output, NCHW float32 0..1
                found = np.ascontiguousarray(found.transpose(2, 0, 1), dtype=np.float32) / np.iinfo(out_dtype).max
            _contents.clear()  # one shape at a time: bounded memory
            _contents[key] = found
        return found


def standin_engine(profile: str, *, log: ForwardLog, postprocess: str = "graph",
                   settings: Settings | None = None) -> Engine:
    """An Engine whose network forwards are `profile`'s modelled GPU (see the module docstring)."""
    chosen = PROFILES[profile]

    def factory(network: str, out_dtype: type[np.integer]) -> Runner:
        return StandInRunner(network, chosen, out_dtype, log, fused=postprocess == "graph")

    return Engine(device="cuda", settings=settings, postprocess=postprocess, runner_factory=factory)
