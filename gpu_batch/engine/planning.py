"""Tile plans: how an image is cut into windows for the network, a pure function of its size, the memory the
windows may use and the network (tests and benchmarks call it without a GPU).

A plan is a grid of `rows` x `cols` tiles of one shape (ceil(height / rows) x ceil(width / cols); the last row
and column shift back inside the image), each run as a window that reaches `pad` pixels past the tile towards
its neighbours and `border` pixels of reflect padding past the image edge. Every window has the same shape,
so the runtime plans once and any windows batch together. The grid is the one whose windows cover the image
with the least forward work (windows x window pixels) that fits the memory: a 1 MP photo is one window on a
GPU, a 12 MP photo a handful of large ones, instead of fixed 1024 px tiles whose shifted edge tiles and
overlaps nearly doubled the work at some sizes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from common.settings import Settings

from .models import model_spec

MIN_TILE = 32
GPU_MAX_BATCH = 8
# Largest tile on the CPU: larger windows are no faster there, and the CLI's progress moves once per window.
CPU_MAX_TILE = 512
# Peak runtime memory per window pixel, fp32 on the CPU with the post-processing in the graph (measured by
# benchmarks/engine_memory.py, rounded up; see docs/engine.md). Real-CUGAN's variants share one number per scale.
CPU_WORK_BYTES_PER_PIXEL = {"x4plus": 14_000, "x4plus-anime": 14_000, "animevideov3": 2_000, "photo-jpeg": 14_000,
                            "cugan-x2": 6_500, "cugan-x3": 13_500, "cugan-x4": 8_500}
# The CUDA model is fp16: activations take half the bytes (an estimate until benchmarks/gpu/busy.py measures it
# on a GPU); the post-processing at the output resolution stays float32, which this halving leaves inside.
GPU_WORK_DIVISOR = 2
# ONNX Runtime's CUDA kernels index a tensor with 32-bit integers: a batch's largest activation (64 feature
# channels at the output resolution) must stay below 2**31 elements.
MAX_TENSOR_ELEMENTS = 2**31 - 1
FEATURE_CHANNELS = 64


@dataclass(frozen=True, slots=True)
class TilePlan:
    tile_h: int  # the centre each window contributes to the output, in input pixels
    tile_w: int
    rows: int
    cols: int
    window_h: int  # the window the network sees: tile + overlap pad, or the whole bordered image
    window_w: int
    batch: int  # windows per forward

    @property
    def windows(self) -> int:
        return self.rows * self.cols

    @property
    def work(self) -> int:
        """Input pixels the network computes for the image."""
        return self.windows * self.window_h * self.window_w

    def work_ratio(self, width: int, height: int) -> float:
        """Forward work over the image's own pixels (1.0 would be no overlap and no border)."""
        return self.work / (width * height)


def tile_pad(network: str, configured: int | None = None) -> int:
    """Overlap around each tile: the configured pad (settings.tile_pad), raised to what the network needs for
    invisible seams."""
    return max(Settings().tile_pad if configured is None else configured, model_spec(network).min_tile_pad)


def window_bytes_per_pixel(network: str, device: str) -> int:
    spec = model_spec(network)
    per_pixel = CPU_WORK_BYTES_PER_PIXEL.get(f"cugan-x{spec.scale}" if spec.shrink else spec.name, 14_000)
    return per_pixel // GPU_WORK_DIVISOR if device == "cuda" else per_pixel


def _window(size: int, tile: int, pad: int, border: int) -> int:
    return min(tile + 2 * pad, size + 2 * border)


def grid_plan(width: int, height: int, tile_h: int, tile_w: int, *, pad: int, border: int,
              batch: int = 1) -> TilePlan:
    """The plan for tiles of tile_h x tile_w (capped at the image), e.g. a plan's tiles halved after out of memory."""
    tile_h, tile_w = min(max(MIN_TILE, tile_h), height), min(max(MIN_TILE, tile_w), width)
    return TilePlan(tile_h, tile_w, math.ceil(height / tile_h), math.ceil(width / tile_w),
                    _window(height, tile_h, pad, border), _window(width, tile_w, pad, border), batch)


def plan_tiles(width: int, height: int, *, network: str, memory_budget: int, device: str = "cuda",
               tile_size: int = 0, pad: int | None = None) -> TilePlan:
    """The tile grid for a width x height image: `tile_size` > 0 forces square tiles of that size (the old fixed
    grid, for tests and the CLI's --tile); else the grid with the least forward work whose windows fit
    `memory_budget` bytes one at a time (GPU: then as many per batch as fit, up to GPU_MAX_BATCH)."""
    spec = model_spec(network)
    pad = tile_pad(network, pad)
    border = spec.border_pad
    per_pixel = window_bytes_per_pixel(network, device)
    on_gpu = device == "cuda"
    # the network's own padding (Real-CUGAN) is computed too
    extra = 2 * spec.shrink + spec.align - 1
    max_pixels = MAX_TENSOR_ELEMENTS // (FEATURE_CHANNELS * spec.scale**2) if on_gpu else None

    def window_cost(window_h: int, window_w: int) -> int:
        return (window_h + extra) * (window_w + extra)

    def fits(window_h: int, window_w: int) -> bool:
        pixels = window_cost(window_h, window_w)
        if max_pixels is not None and pixels > max_pixels:
            return False
        if not on_gpu and max(window_h, window_w) > CPU_MAX_TILE + 2 * pad:
            return False
        return pixels * per_pixel <= memory_budget

    if tile_size:
        tile_h = tile_w = tile_size
    else:
        tile_h, tile_w = _least_work_tiles(width, height, pad, border, fits, window_cost)
    plan = grid_plan(width, height, tile_h, tile_w, pad=pad, border=border)
    if not on_gpu:
        return plan
    pixels = window_cost(plan.window_h, plan.window_w)
    by_memory = memory_budget // max(1, pixels * per_pixel)
    by_index = max_pixels // pixels if max_pixels else GPU_MAX_BATCH
    return dataclasses.replace(plan, batch=max(1, min(GPU_MAX_BATCH, plan.windows, by_memory, by_index)))


def _least_work_tiles(width: int, height: int, pad: int, border: int, fits: Callable[[int, int], bool],
                      window_cost: Callable[[int, int], int]) -> tuple[int, int]:
    best: tuple[int, int, tuple[int, int]] | None = None
    max_rows, max_cols = max(1, math.ceil(height / MIN_TILE)), max(1, math.ceil(width / MIN_TILE))
    for rows in range(1, max_rows + 1):
        tile_h = math.ceil(height / rows)
        window_h = _window(height, tile_h, pad, border)
        if best is not None and rows * window_cost(window_h, width) > best[0]:
            break  # a lower bound (the windows of a row cover the width): more rows only add overlap
        for cols in range(1, max_cols + 1):
            tile_w = math.ceil(width / cols)
            window_w = _window(width, tile_w, pad, border)
            if fits(window_h, window_w):
                # more columns than the fewest that fit only add overlap
                work = rows * cols * window_cost(window_h, window_w)
                if best is None or (work, rows * cols) < best[:2]:
                    best = (work, rows * cols, (tile_h, tile_w))
                break
    if best is None:  # nothing fits: the smallest tiles, and the out-of-memory retry says so if they fail
        return MIN_TILE, MIN_TILE
    return best[2]
