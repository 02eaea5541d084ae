"""ONNX Runtime sessions: provider choice, one cached session per (model, precision), memory budget."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from PIL import Image

from .convert import INPUT_NAME, OUTPUT_NAME, POOLED_PREFIX, USE_GIVEN_POOLED
from .errors import EngineError, EngineOutOfMemoryError
from .models import ensure_model, model_spec

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Longest side of the reduced whole image whose global means every tile of a Real-CUGAN run shares: images up
# to this size get their exact means (tiled output = whole-image output), larger ones a close estimate.
POOLED_MAX_SIDE = 512
Pooled = tuple[np.ndarray, ...]
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


@dataclass(frozen=True, slots=True)
class ModelRunner:
    """One loaded model. `run` is safe to call from many threads: it keeps no state between calls."""

    model: str
    precision: str
    provider: str
    session: ort.InferenceSession
    shrink: int = 0  # see ModelSpec.shrink / align / adds_nearest_input
    align: int = 1
    factor: int = 4
    adds_nearest_input: bool = False

    @property
    def pooled_inputs(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of each `pooled.<i>.given` input; empty for networks without global pooling."""
        return [(i.name, tuple(i.shape)) for i in self.session.get_inputs() if i.name.startswith(POOLED_PREFIX)]

    def _padded(self, batch: np.ndarray) -> np.ndarray:
        height, width = batch.shape[2:]
        extra_h = -(height + 2 * self.shrink) % self.align
        extra_w = -(width + 2 * self.shrink) % self.align
        if not (self.shrink or extra_h or extra_w):
            return batch
        mode: Literal["reflect", "symmetric"] = (
            "reflect" if min(height, width) > self.shrink + max(extra_h, extra_w) else "symmetric")
        return np.pad(batch, [(0, 0), (0, 0), (self.shrink, self.shrink + extra_h),
                              (self.shrink, self.shrink + extra_w)], mode=mode)

    def run(self, batch: np.ndarray, pooled: Pooled | None = None) -> np.ndarray:
        """float32 NCHW 0..1 in, float32 NCHW (`factor` x, unclamped) out, the same size for every network.

        A network that eats `shrink` pixels per side gets them back as a reflect pad (realcugan-ncnn-vulkan's
        prepadding), plus bottom/right padding up to its alignment; the extra output is cropped off.
        `pooled` (from `pooled_means`) replaces the network's own global means, so tiles agree."""
        height, width = batch.shape[2:]
        feeds: dict[str, np.ndarray] = {INPUT_NAME: self._padded(batch)}
        if self.pooled_inputs:
            feeds[USE_GIVEN_POOLED] = np.array(pooled is not None)
            for index, (name, shape) in enumerate(self.pooled_inputs):
                feeds[name] = pooled[index] if pooled is not None else np.zeros(shape, np.float32)
        out = self._run(feeds, [OUTPUT_NAME])[0][:, :, : height * self.factor, : width * self.factor]
        if self.adds_nearest_input:
            out = out + batch.repeat(self.factor, axis=2).repeat(self.factor, axis=3)
        return out

    def pooled_means(self, image: np.ndarray, max_side: int = POOLED_MAX_SIDE) -> Pooled | None:
        """The network's global means over a whole HxWx3 image (Lanczos-reduced to `max_side` first, as
        realcugan-ncnn-vulkan's default `syncgap` does); None for networks without global pooling."""
        inputs = self.pooled_inputs
        if not inputs:
            return None
        height, width = image.shape[:2]
        ratio = min(1.0, max_side / max(height, width))
        if ratio < 1.0:
            size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
            image = np.stack([np.asarray(Image.fromarray(image[..., c], "F").resize(size, Image.Resampling.LANCZOS))
                              for c in range(image.shape[2])], axis=2)
        batch = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
        feeds = {INPUT_NAME: self._padded(batch), USE_GIVEN_POOLED: np.array(False)}
        feeds.update({name: np.zeros(shape, np.float32) for name, shape in inputs})
        names = [f"{POOLED_PREFIX}{index}" for index in range(len(inputs))]
        return tuple(np.ascontiguousarray(mean[:1], dtype=np.float32) for mean in self._run(feeds, names))

    def _run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        batch = feeds[INPUT_NAME]
        try:
            if self.provider == CUDA:
                binding = self.session.io_binding()
                for name, value in feeds.items():
                    binding.bind_cpu_input(name, np.ascontiguousarray(value))
                for name in outputs:
                    binding.bind_output(name, "cuda")  # stays on the GPU until the one copy back
                self.session.run_with_iobinding(binding)
                return list(binding.copy_outputs_to_cpu())
            return list(self.session.run(outputs, feeds))
        except Exception as exc:  # onnxruntime raises its own exception types
            if is_out_of_memory(exc):
                raise EngineOutOfMemoryError(f"{self.model}: out of memory on a batch of {batch.shape}") from exc
            raise EngineError(f"{self.model}: inference failed: {exc}") from exc


def _session_options(device: str) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if device == "cpu":
        options.intra_op_num_threads = cpu_count()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def load_runner(model: str, device: str, model_dir: Path | None = None) -> ModelRunner:
    precision = "fp16" if device == "cuda" else "fp32"
    path = ensure_model(model, precision=precision, model_dir=model_dir)
    providers: list[str | tuple[str, dict[str, str]]]
    if device == "cuda":
        providers = [(CUDA, {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}),
                     CPU]
    else:
        providers = [CPU]
    try:
        session = ort.InferenceSession(str(path), _session_options(device), providers=providers)
    except Exception as exc:
        raise EngineError(f"could not load model {model} ({path}): {exc}") from exc
    provider = session.get_providers()[0]
    if device == "cuda" and provider != CUDA:
        # e.g. the CUDA provider failed to initialise: the fp16 model would crawl on the CPU, so load fp32.
        log.warning("CUDA requested for %s but ONNX Runtime fell back to %s; using the CPU model", model, provider)
        return load_runner(model, "cpu", model_dir)
    log.info("loaded model %s (%s) with %s", model, precision, provider)
    spec = model_spec(model)
    return ModelRunner(model, precision, provider, session, spec.shrink, spec.align, spec.scale,
                       spec.adds_nearest_input)


class RunnerCache:
    """Lazily loads each model once; concurrent first calls for the same model load it once."""

    def __init__(self, device: str, model_dir: Path | None = None) -> None:
        self.device = device
        self.model_dir = model_dir
        self._runners: dict[str, ModelRunner] = {}
        self._lock = threading.Lock()

    def get(self, model: str) -> ModelRunner:
        runner = self._runners.get(model)
        if runner is not None:
            return runner
        with self._lock:
            runner = self._runners.get(model)
            if runner is None:
                runner = load_runner(model, self.device, self.model_dir)
                self._runners[model] = runner
            return runner
