"""What a person sees while an image is upscaled: tiles done, a sub-progress inside the tile that is running,
and the time left.

ONNX Runtime reports nothing while one tile runs, and on a CPU one tile of a small photo takes tens of
seconds. So the time a tile takes is estimated before the first one starts, the bar moves through each tile
by the clock, and every finished tile replaces the estimate with what was measured. The estimate is the
network's multiply-adds for the tile's pixels (counted once from its ONNX graph) over a first guess of this
CPU's speed; after a run the measured seconds per pixel are kept (XDG cache, per network, provider and core
count), so later runs on the same machine start from what it really does.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from gpu_batch.engine.engine import Engine
from gpu_batch.engine.models import default_model_dir, network_for, onnx_filename
from gpu_batch.engine.runtime import CUDA, cpu_count

SLOW_SECONDS = 10.0  # estimates above this are announced before the run starts
# A first guess of fp32 multiply-adds per second and core (a share of AVX2 FMA peak a busy machine still gives),
# used until this machine has a measured speed for the network.
GUESSED_MACS_PER_CORE_SECOND = 1e10
_COUNT_SIDE = 128  # px: the input the graph's multiply-adds are counted for (per pixel it hardly varies)
_TICK = 0.25  # s between clock-driven updates of the bar
_TILE_CAP = 0.95  # the clock never fills a tile: only the engine's report does


@dataclass(frozen=True, slots=True)
class Estimate:
    network: str
    provider: str
    tiles: int
    pixels_per_tile: int  # the network's input per tile, padding included
    seconds_per_pixel: float
    measured: bool  # from an earlier run on this machine, not a first guess

    @property
    def seconds_per_tile(self) -> float:
        return self.pixels_per_tile * self.seconds_per_pixel

    @property
    def seconds(self) -> float:
        return self.tiles * self.seconds_per_tile


def speed_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "upscaler" / "speed.json"


def _speed_key(network: str, provider: str) -> str:
    return f"{network}|{provider}|{cpu_count()}"


def _read_speeds() -> dict[str, float]:
    try:
        found = json.loads(speed_cache().read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in found.items() if isinstance(v, int | float)} if isinstance(found, dict) else {}


def record_speed(found: Estimate, seconds: float) -> None:
    """Keep what this run measured (best effort: a read-only cache only costs the next estimate)."""
    if found.tiles < 1 or seconds <= 0:
        return
    speeds = {**_read_speeds(), _speed_key(found.network, found.provider): seconds / (found.tiles *
                                                                                        found.pixels_per_tile)}
    with contextlib.suppress(OSError):
        speed_cache().parent.mkdir(parents=True, exist_ok=True)
        speed_cache().write_text(json.dumps(speeds, indent=1, sort_keys=True))


def macs_per_pixel(network: str) -> float:
    """The network's multiply-adds per input pixel: every Conv's output elements times its kernel's size."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(default_model_dir() / onnx_filename(network, "fp32")))
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, 3, _COUNT_SIDE, _COUNT_SIDE),
                          strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = value
    inferred = shape_inference.infer_shapes(model)
    shapes = {info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
              for info in (*inferred.graph.value_info, *inferred.graph.output)}
    kernels = {init.name: list(init.dims) for init in model.graph.initializer}
    total = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv" and node.output[0] in shapes and node.input[1] in kernels:
            _, per_group, *window = kernels[node.input[1]]
            total += math.prod(shapes[node.output[0]]) * per_group * math.prod(window)
    return total / (_COUNT_SIDE * _COUNT_SIDE)


def estimate(engine: Engine, *, model: str, scale: float, width: int, height: int, tile_size: int = 0) -> Estimate:
    """Tiles, and seconds per tile: measured earlier on this machine, else counted from the graph and guessed."""
    network = network_for(model, scale).name
    provider = engine.provider(network)  # loads the model (the run needs it anyway)
    plan = engine.plan_tiles(network, width, height, tile_size)
    tiles, pixels = plan.windows, plan.window_h * plan.window_w
    measured = _read_speeds().get(_speed_key(network, provider))
    if measured is not None:
        return Estimate(network, provider, tiles, pixels, measured, measured=True)
    guess = macs_per_pixel(network) / (GUESSED_MACS_PER_CORE_SECOND * cpu_count())
    return Estimate(network, provider, tiles, pixels, guess, measured=False)


def slow_notice(found: Estimate, *, model: str, width: int, height: int) -> str | None:
    """One sentence before a run that will take a while on the CPU; None when it will not."""
    if found.provider == CUDA or found.seconds < SLOW_SECONDS:
        return None
    tiles = f"{found.tiles} tile{'s' if found.tiles != 1 else ''}"
    basis = "as measured here before" if found.measured else "a first guess; later runs use the measured speed"
    return (f"No CUDA GPU: {model} runs on the CPU; {width}x{height} ({tiles}) takes about "
            f"{_duration(found.seconds)} ({basis}).")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class TileProgress:
    """A rich progress bar over tiles that moves inside a tile by the clock and shows the time left."""

    def __init__(self, description: str, found: Estimate | None, *, console: Console) -> None:
        self._per_tile = found.seconds_per_tile if found else None
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("tiles"), TimeElapsedColumn(), TextColumn("{task.fields[left]}"),
                             console=console)
        self._task: TaskID = self._bar.add_task(description, total=found.tiles if found else None, left="")
        self._lock = threading.Lock()
        self._done, self._total = 0, found.tiles if found else 0
        self._started = self._tile_started = time.monotonic()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="tile-progress", daemon=True)

    def __enter__(self) -> TileProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __call__(self, done: int, total: int) -> None:
        """The engine's progress callback: `done` of `total` tiles finished."""
        now = time.monotonic()
        with self._lock:
            if done > 0:  # measured beats estimated
                self._per_tile = (now - self._started) / done
            self._done, self._total, self._tile_started = done, total, now
        if not self._bar.live.is_started:  # shown only once decoding worked, so errors stay one line
            self._bar.start()
            self._ticker.start()
        self._render(now)

    def left_seconds(self, now: float) -> float | None:
        with self._lock:
            if self._per_tile is None or not self._total:
                return None
            in_tile = now - self._tile_started
            return max(0.0, (self._total - self._done) * self._per_tile - in_tile)

    def fraction_done(self, now: float) -> float:
        """Tiles done, plus the running tile's share by the clock (never a whole tile)."""
        with self._lock:
            if self._per_tile is None or self._done >= self._total:
                return float(self._done)
            return self._done + min(_TILE_CAP, (now - self._tile_started) / self._per_tile)

    def _render(self, now: float) -> None:
        left = self.left_seconds(now)
        self._bar.update(self._task, completed=self.fraction_done(now), total=self._total or None,
                         left=f"~{_duration(left)} left" if left is not None and left >= 1 else "")

    def _tick(self) -> None:
        while not self._stop.wait(_TICK):
            self._render(time.monotonic())

    def stop(self) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()
        self._bar.stop()
