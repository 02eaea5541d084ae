"""ONNX Runtime sessions: provider choice, one cached session per (network, output dtype), memory budget.

Each session runs the network with its post-processing fused in (postprocess.py): windows in, final pixels out.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from . import postprocess
from .convert import INPUT_NAME, OUTPUT_NAME, POOLED_PREFIX, USE_GIVEN_POOLED
from .errors import EngineError, EngineOutOfMemoryError
from .models import ModelSpec, ensure_model, model_spec
from .postprocess import PIXELS_NAME, WINDOW_SIZE_NAME

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Longest side of the reduced whole image whose global means every tile of a Real-CUGAN run shares: images up
# to this size get their exact means (tiled output = whole-image output), larger ones a close estimate.
POOLED_MAX_SIDE = 512
Pooled = tuple[np.ndarray, ...]
# Of the GPU memory free once a model is loaded, what one batch of windows may plan for: the rest is cuDNN's
# workspace and the arena's fragmentation.
GPU_MEMORY_SHARE = 0.8
DEFAULT_GPU_FREE = 8 << 30  # when the CUDA runtime cannot be asked
_OOM_PATTERN = re.compile(r"out of memory|failed to allocate|bad_alloc|cudaErrorMemoryAllocation|OOM", re.I)


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cuda_available() -> bool:
    return CUDA in ort.get_available_providers()


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when ONNX Runtime has the CUDA provider, else 'cpu'."""
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be 'auto', 'cuda' or 'cpu', got {device!r}")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise EngineError("device='cuda' requested but onnxruntime has no CUDAExecutionProvider "
                          "(install onnxruntime-gpu)")
    return device


def available_host_memory() -> int:
    """Bytes this process may still use: MemAvailable, capped by a cgroup v2 limit if one is set."""
    available = 8 << 30
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit_text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit_text != "max":
            available = min(available, int(limit_text) - used)
    except (OSError, ValueError):
        pass
    return max(available, 256 << 20)


def available_gpu_memory() -> int | None:
    """Free bytes on the current CUDA device via the CUDA runtime, None if it cannot be asked."""
    for name in ("libcudart.so", "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0"):
        try:
            cudart = ctypes.CDLL(name)
        except OSError:
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        if cudart.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) == 0:
            return int(free.value)
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or bool(_OOM_PATTERN.search(str(exc)))


class Runner(Protocol):
    """What the engine needs of a loaded network: ModelRunner, or a stand-in a benchmark injects."""

    @property
    def provider(self) -> str: ...

    @property
    def device(self) -> str: ...  # "cuda" or "cpu": whose memory the windows use

    def memory_budget(self) -> int: ...  # bytes one batch of windows may use on a GPU (0 on the CPU)

    def forward(self, windows: np.ndarray, pooled: Pooled | None = None, *, last: bool = False) -> np.ndarray: ...

    def pooled_means(self, image: np.ndarray, max_side: int = POOLED_MAX_SIDE) -> Pooled | None: ...


# (network name, output dtype) -> its runner
RunnerFactory = Callable[[str, type[np.integer]], Runner]


@dataclass(frozen=True, slots=True)
class ModelRunner:
    """One loaded network. `forward` is safe to call from many threads: it keeps no state between calls."""

    model: str
    precision: str
    provider: str
    session: ort.InferenceSession
    spec: ModelSpec
    out_dtype: type[np.integer] = np.uint8
    fused: bool = True  # post-processing in the graph (postprocess.fuse), else numpy on the host
    colour_fix: bool = True
    gpu_budget: int = 0

    @property
    def device(self) -> str:
        return "cuda" if self.provider == CUDA else "cpu"

    def memory_budget(self) -> int:
        return self.gpu_budget

    @property
    def pooled_inputs(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of each `pooled.<i>.given` input; empty for networks without global pooling."""
        return [(i.name, tuple(i.shape)) for i in self.session.get_inputs() if i.name.startswith(POOLED_PREFIX)]

    def _padded(self, batch: np.ndarray) -> np.ndarray:
        spec = self.spec
        height, width = batch.shape[2:]
        extra_h = -(height + 2 * spec.shrink) % spec.align
        extra_w = -(width + 2 * spec.shrink) % spec.align
        if not (spec.shrink or extra_h or extra_w):
            return batch
        mode: Literal["reflect", "symmetric"] = (
            "reflect" if min(height, width) > spec.shrink + max(extra_h, extra_w) else "symmetric")
        return np.pad(batch, [(0, 0), (0, 0), (spec.shrink, spec.shrink + extra_h),
                              (spec.shrink, spec.shrink + extra_w)], mode=mode)

    def _feeds(self, windows: np.ndarray, pooled: Pooled | None) -> dict[str, np.ndarray]:
        """A network that eats `shrink` pixels per side gets them back as a reflect pad (realcugan-ncnn-vulkan's
        prepadding), plus bottom/right padding up to its alignment; the fused graph crops the extra output off
        (told the window's size), the host path below. `pooled` (from `pooled_means`) replaces the network's own
        global means, so tiles agree."""
        feeds: dict[str, np.ndarray] = {INPUT_NAME: self._padded(windows)}
        if self.fused and (self.spec.shrink or self.spec.align > 1):
            feeds[WINDOW_SIZE_NAME] = np.array(windows.shape[2:], np.int64)
        if self.pooled_inputs:
            feeds[USE_GIVEN_POOLED] = np.array(pooled is not None)
            for index, (name, shape) in enumerate(self.pooled_inputs):
                feeds[name] = pooled[index] if pooled is not None else np.zeros(shape, np.float32)
        return feeds

    def forward(self, windows: np.ndarray, pooled: Pooled | None = None, *, last: bool = False) -> np.ndarray:
        """float32 N x 3 x h x w (0..1) -> final pixels N x fh x fw x 3 `out_dtype`. `last`: the image's last
        batch, after which the runtime's memory arena gives back what it no longer uses (the next image plans
        its tiles from the device's free memory)."""
        feeds = self._feeds(windows, pooled)
        if self.fused:
            return self._run(feeds, [PIXELS_NAME], release=last)[0]
        height, width = windows.shape[2:]
        factor = self.spec.scale
        raw = self._run(feeds, [OUTPUT_NAME], release=last)[0][:, :, : height * factor, : width * factor]
        if self.spec.adds_nearest_input:
            raw = raw + windows.repeat(factor, axis=2).repeat(factor, axis=3)
        return postprocess.on_host(windows, raw, factor, colour_fix=self.colour_fix, out_dtype=self.out_dtype)

    def pooled_means(self, image: np.ndarray, max_side: int = POOLED_MAX_SIDE) -> Pooled | None:
        """The network's global means over a whole CxHxW image (Lanczos-reduced to `max_side` first, as
        realcugan-ncnn-vulkan's default `syncgap` does); None for networks without global pooling."""
        inputs = self.pooled_inputs
        if not inputs:
            return None
        height, width = image.shape[1:]
        ratio = min(1.0, max_side / max(height, width))
        if ratio < 1.0:
            size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
            image = np.stack([np.asarray(Image.fromarray(plane, "F").resize(size, Image.Resampling.LANCZOS))
                              for plane in image])
        batch = np.ascontiguousarray(np.broadcast_to(image[None], (1, 3, *image.shape[1:])), dtype=np.float32)
        feeds = self._feeds(batch, None)
        names = [f"{POOLED_PREFIX}{index}" for index in range(len(inputs))]
        return tuple(np.ascontiguousarray(mean[:1], dtype=np.float32) for mean in self._run(feeds, names))

    def _run(self, feeds: dict[str, np.ndarray], outputs: list[str], *, release: bool = False) -> list[np.ndarray]:
        batch = feeds[INPUT_NAME]
        options = ort.RunOptions()
        if release:
            options.add_run_config_entry("memory.enable_memory_arena_shrinkage",
                                         "gpu:0" if self.provider == CUDA else "cpu:0")
        try:
            if self.provider == CUDA:
                binding = self.session.io_binding()
                for name, value in feeds.items():
                    binding.bind_cpu_input(name, np.ascontiguousarray(value))
                for name in outputs:
                    binding.bind_output(name, "cuda")  # stays on the GPU until the one copy back
                self.session.run_with_iobinding(binding, options)
                return list(binding.copy_outputs_to_cpu())
            return list(self.session.run(outputs, feeds, options))
        except Exception as exc:  # onnxruntime raises its own exception types
            if is_out_of_memory(exc):
                raise EngineOutOfMemoryError(f"{self.model}: out of memory on a batch of {batch.shape}") from exc
            raise EngineError(f"{self.model}: inference failed: {exc}") from exc


def session_options(device: str) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if device == "cpu":
        options.intra_op_num_threads = cpu_count()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def load_runner(model: str, device: str, model_dir: Path | None = None, *, out_dtype: type[np.integer] = np.uint8,
                colour_fix: bool = True, fused: bool = True) -> ModelRunner:
    """A session for `model` on `device` ("cuda": the fp16 model, else fp32) whose forward returns final pixels of
    `out_dtype`: post-processed in the graph (`fused`), or in numpy on the host (benchmarks/gpu_busy.py --today)."""
    precision = "fp16" if device == "cuda" else "fp32"
    path = ensure_model(model, precision=precision, model_dir=model_dir)
    spec = model_spec(model)
    providers: list[str | tuple[str, dict[str, str]]]
    if device == "cuda":
        providers = [(CUDA, {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}),
                     CPU]
    else:
        providers = [CPU]
    try:
        source: str | bytes = str(path)
        if fused:
            graph = postprocess.fuse(onnx.load(str(path)), factor=spec.scale, shrink=spec.shrink,
                                     padded=bool(spec.shrink or spec.align > 1),
                                     adds_nearest_input=spec.adds_nearest_input, colour_fix=colour_fix,
                                     out_dtype=out_dtype)
            source = graph.SerializeToString()
            del graph
        session = ort.InferenceSession(source, session_options(device), providers=providers)
    except Exception as exc:
        raise EngineError(f"could not load model {model} ({path}): {exc}") from exc
    provider = session.get_providers()[0]
    if device == "cuda" and provider != CUDA:
        # e.g. the CUDA provider failed to initialise: the fp16 model would crawl on the CPU, so load fp32.
        log.warning("CUDA requested for %s but ONNX Runtime fell back to %s; using the CPU model", model, provider)
        return load_runner(model, "cpu", model_dir, out_dtype=out_dtype, colour_fix=colour_fix, fused=fused)
    log.info("loaded model %s (%s, %s output, post-processing %s) with %s", model, precision,
             np.dtype(out_dtype).name, "in the graph" if fused else "on the host", provider)
    budget = 0
    if provider == CUDA:  # what the arena may take once the weights are in; it is given back after each image
        budget = int((available_gpu_memory() or DEFAULT_GPU_FREE) * GPU_MEMORY_SHARE)
    return ModelRunner(model, precision, provider, session, spec, out_dtype, fused, colour_fix, budget)


class RunnerCache:
    """Loads each (network, output dtype) once through `factory`; concurrent first calls load it once."""

    def __init__(self, factory: RunnerFactory) -> None:
        self._factory = factory
        self._runners: dict[tuple[str, str], Runner] = {}
        self._lock = threading.Lock()

    def get(self, model: str, out_dtype: type[np.integer] = np.uint8) -> Runner:
        key = (model, np.dtype(out_dtype).name)
        runner = self._runners.get(key)
        if runner is not None:
            return runner
        with self._lock:
            runner = self._runners.get(key)
            if runner is None:
                runner = self._factory(model, out_dtype)
                self._runners[key] = runner
            return runner

    def loaded(self) -> list[str]:
        return sorted({model for model, _ in self._runners})

    def loaded_runner(self, model: str) -> Runner | None:
        return next((runner for (name, _), runner in list(self._runners.items()) if name == model), None)
