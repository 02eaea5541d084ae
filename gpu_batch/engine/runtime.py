"""ONNX Runtime sessions: provider choice, one cached session per (model, precision), memory budget."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .convert import INPUT_NAME, OUTPUT_NAME
from .errors import EngineError, EngineOutOfMemoryError
from .models import ensure_model

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
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

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW 0..1 in, float32 NCHW (4x, unclamped) out."""
        try:
            if self.provider == CUDA:
                binding = self.session.io_binding()
                binding.bind_cpu_input(INPUT_NAME, np.ascontiguousarray(batch, dtype=np.float32))
                binding.bind_output(OUTPUT_NAME, "cuda")  # stays on the GPU until the one copy back
                self.session.run_with_iobinding(binding)
                return binding.copy_outputs_to_cpu()[0]
            return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
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
    return ModelRunner(model, precision, provider, session)


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
