"""Run a network over an image of any size, window by window (planning.py's grid), into a preallocated output.

The image is reflect-padded by a small border (the reference runner uses 10 px; models choose theirs, see
models.py), read window by window rather than copied whole. Each window reaches `pad` pixels past its tile
towards interior seams; windows at the image edge are shifted inward so they start at that border (the
whole-image run sees exactly the same border), and the last row/column of tiles is shifted back to end at the
image edge instead of feeding padding. The forward returns finished pixels (postprocess.py), so the host only
copies each tile's centre into the uint8/uint16 output: peak memory is the output plus one batch of windows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import EngineOutOfMemoryError
from .planning import MIN_TILE, TilePlan, grid_plan

# (windows N x 3 x h x w float32 0..1, whether it is the image's last batch) -> N x fh x fw x 3 final pixels
Forward = Callable[[np.ndarray, bool], np.ndarray]
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class TileSpot:
    y: int  # top-left of the tile's centre in the (unpadded) input
    x: int


def tile_spots(height: int, width: int, tile_h: int, tile_w: int) -> list[TileSpot]:
    """Tiles of one shape covering the image; the last row/column is shifted back inside it."""
    def starts(size: int, tile: int) -> list[int]:
        return [min(i * tile, size - tile) for i in range(-(-size // tile))]

    return [TileSpot(y, x) for y in starts(height, tile_h) for x in starts(width, tile_w)]


def _batches(spots: list[TileSpot], size: int) -> Iterator[list[TileSpot]]:
    for start in range(0, len(spots), size):
        yield spots[start : start + size]


def _window_start(centre: int, pad: int, border: int, size: int, window: int, align: int = 1) -> int:
    """Start of a tile window in unpadded coordinates: `pad` before the centre, within the bordered image.

    With `align` > 1 the start moves back to a multiple of `align` past the border, so a network with strided
    stages (Real-CUGAN) sees every tile in the same phase as the whole image; the last window, which must end
    at the bordered edge, keeps its place when moving it would uncover its centre."""
    start = min(max(centre - pad, -border), size + border - window)
    aligned = start - (start + border) % align
    return aligned if aligned >= -border and aligned + window >= min(centre + window - 2 * pad, size) else start


class _Reader:
    """Windows of the image as if it were reflect-padded by `border`, without padding the whole image."""

    def __init__(self, image: np.ndarray, border: int) -> None:
        self.image, self.border = image, border
        # np.pad's reflect needs more pixels than the pad; tiny images are padded whole, 'symmetric'
        self.whole: np.ndarray | None = None
        if min(image.shape[:2]) <= border:
            mode: Literal["symmetric"] = "symmetric"
            self.whole = np.pad(image, [(border, border), (border, border), (0, 0)], mode=mode)

    def window(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        if self.whole is not None:
            b = self.border
            return self.whole[top + b : top + b + height, left + b : left + b + width]
        rows, cols = self.image.shape[:2]
        inside = self.image[max(top, 0) : min(top + height, rows), max(left, 0) : min(left + width, cols)]
        pads = [(max(-top, 0), max(top + height - rows, 0)), (max(-left, 0), max(left + width - cols, 0)), (0, 0)]
        # a window that crosses an edge holds that edge and more than `border` pixels beyond it, so reflecting
        # the window equals reflecting the whole image there
        return np.pad(inside, pads, mode="reflect") if any(p != (0, 0) for p in pads[:2]) else inside


def upscale_tiled(image: np.ndarray, forward: Forward, *, factor: int, plan: TilePlan, pad: int, border: int,
                  out_dtype: type[np.integer], align: int = 1, progress: Progress | None = None) -> np.ndarray:
    """image: HxWxC float32 0..1 (C = 1 or 3) -> (H*factor)x(W*factor)x3 `out_dtype`."""
    height, width = image.shape[:2]
    spots = tile_spots(height, width, plan.tile_h, plan.tile_w)
    reader = _Reader(image, border)
    in_h, in_w = plan.window_h, plan.window_w
    output = np.empty((height * factor, width * factor, 3), dtype=out_dtype)
    done = 0
    if progress:
        progress(0, len(spots))
    for group in _batches(spots, max(1, plan.batch)):
        stack = np.empty((len(group), 3, in_h, in_w), dtype=np.float32)
        origins = []
        for i, spot in enumerate(group):
            top = _window_start(spot.y, pad, border, height, in_h, align)
            left = _window_start(spot.x, pad, border, width, in_w, align)
            origins.append(((spot.y - top) * factor, (spot.x - left) * factor))
            stack[i] = reader.window(top, left, in_h, in_w).transpose(2, 0, 1)  # gray broadcasts to 3 channels
        pixels = forward(stack, done + len(group) == len(spots))
        out_h, out_w = plan.tile_h * factor, plan.tile_w * factor
        for i, (spot, (y0, x0)) in enumerate(zip(group, origins, strict=True)):
            y, x = spot.y * factor, spot.x * factor
            output[y : y + out_h, x : x + out_w] = pixels[i, y0 : y0 + out_h, x0 : x0 + out_w]
        done += len(group)
        if progress:
            progress(done, len(spots))
    return output


def upscale_with_retry(image: np.ndarray, forward: Forward, *, factor: int, plan: TilePlan, pad: int, border: int,
                       out_dtype: type[np.integer], align: int = 1, progress: Progress | None = None,
                       on_retry: Callable[[str], None] | None = None) -> np.ndarray:
    """upscale_tiled, restarted with half the batch, then half the tile, on out-of-memory (never a partial image)."""
    height, width = image.shape[:2]
    while True:
        try:
            return upscale_tiled(image, forward, factor=factor, plan=plan, pad=pad, border=border,
                                 out_dtype=out_dtype, align=align, progress=progress)
        except (EngineOutOfMemoryError, MemoryError) as exc:
            if plan.batch > 1:
                plan = dataclasses.replace(plan, batch=plan.batch // 2)
            elif max(plan.tile_h, plan.tile_w) // 2 >= MIN_TILE:
                plan = grid_plan(width, height, plan.tile_h // 2, plan.tile_w // 2, pad=pad, border=border)
            else:
                raise EngineOutOfMemoryError(
                    f"out of memory even with {plan.tile_h}x{plan.tile_w} px tiles, one per batch: {exc}") from exc
            if on_retry:
                on_retry(f"out of memory; retried with {plan.tile_h}x{plan.tile_w} px tiles, batch {plan.batch}")

