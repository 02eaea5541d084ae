"""Run a network over an image of any size, window by window (planning.py's grid), into a preallocated output.

The image is reflect-padded by a small border (the reference runner uses 10 px; models choose theirs, see
models.py), read window by window rather than copied whole. Each window reaches `pad` pixels past its tile
towards interior seams; windows at the image edge are shifted inward so they start at that border (the
whole-image run sees exactly the same border), and the last row/column of tiles is shifted back to end at the
image edge instead of feeding padding. The forward returns finished pixels (postprocess.py), so the host only
copies each tile's centre into the uint8/uint16 output, in a helper thread beside the next forward: peak memory
is the output plus two batches of windows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
    """Windows of a CxHxW image as if it were reflect-padded by `border`, without padding the whole image."""

    def __init__(self, image: np.ndarray, border: int) -> None:
        self.image, self.border = image, border
        # np.pad's reflect needs more pixels than the pad; tiny images are padded whole, 'symmetric'
        self.whole: np.ndarray | None = None
        if min(image.shape[1:]) <= border:
            mode: Literal["symmetric"] = "symmetric"
            self.whole = np.pad(image, [(0, 0), (border, border), (border, border)], mode=mode)

    def window(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        if self.whole is not None:
            b = self.border
            return self.whole[:, top + b : top + b + height, left + b : left + b + width]
        rows, cols = self.image.shape[1:]
        inside = self.image[:, max(top, 0) : min(top + height, rows), max(left, 0) : min(left + width, cols)]
        pads = [(0, 0), (max(-top, 0), max(top + height - rows, 0)), (max(-left, 0), max(left + width - cols, 0))]
        # a window that crosses an edge holds that edge and more than `border` pixels beyond it, so reflecting
        # the window equals reflecting the whole image there
        return np.pad(inside, pads, mode="reflect") if any(p != (0, 0) for p in pads) else inside


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each window of a plan comes from and where its centre goes."""

    image: np.ndarray
    plan: TilePlan
    factor: int
    pad: int
    border: int
    align: int

    def windows(self, group: list[TileSpot], reader: _Reader) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """The stacked windows (N x 3 x h x w, gray broadcast to 3 channels) and each centre's offset in them."""
        height, width = self.image.shape[1:]
        plan, factor = self.plan, self.factor
        stack = np.empty((len(group), 3, plan.window_h, plan.window_w), dtype=np.float32)
        origins = []
        for i, spot in enumerate(group):
            top = _window_start(spot.y, self.pad, self.border, height, plan.window_h, self.align)
            left = _window_start(spot.x, self.pad, self.border, width, plan.window_w, self.align)
            origins.append(((spot.y - top) * factor, (spot.x - left) * factor))
            stack[i] = reader.window(top, left, plan.window_h, plan.window_w)
        return stack, origins

    def place(self, output: np.ndarray, group: list[TileSpot], origins: list[tuple[int, int]],
              pixels: np.ndarray) -> None:
        out_h, out_w = self.plan.tile_h * self.factor, self.plan.tile_w * self.factor
        for i, (spot, (y0, x0)) in enumerate(zip(group, origins, strict=True)):
            y, x = spot.y * self.factor, spot.x * self.factor
            output[y : y + out_h, x : x + out_w] = pixels[i, y0 : y0 + out_h, x0 : x0 + out_w]


def start_tiled(image: np.ndarray, forward: Forward, *, factor: int, plan: TilePlan, pad: int, border: int,
                out_dtype: type[np.integer], align: int = 1, progress: Progress | None = None) -> Future[np.ndarray]:
    """Run the forwards of image (CxHxW float32 0..1, C = 1 or 3) in this thread and return the output
    ((H*factor)x(W*factor)x3 `out_dtype`) as a future: a helper thread cuts the next windows and places each
    result while the next forward runs, and places the last one after this returns, so the thread that drives
    the GPU does no pixel work between forwards. A single window is the output itself (a view of it)."""
    height, width = image.shape[1:]
    spots = tile_spots(height, width, plan.tile_h, plan.tile_w)
    layout = _Layout(image, plan, factor, pad, border, align)
    reader = _Reader(image, border)
    groups = list(_batches(spots, max(1, plan.batch)))
    if progress:
        progress(0, len(spots))
    if len(spots) == 1:
        stack, [(y0, x0)] = layout.windows(spots, reader)
        pixels = forward(stack, True)
        if progress:
            progress(1, 1)
        done: Future[np.ndarray] = Future()
        done.set_result(pixels[0, y0 : y0 + height * factor, x0 : x0 + width * factor])
        return done
    helper = ThreadPoolExecutor(1, thread_name_prefix="tiles")
    try:
        output = helper.submit(np.empty, (height * factor, width * factor, 3), dtype=out_dtype)
        cut = helper.submit(layout.windows, groups[0], reader)
        placed: list[Future[None]] = []
        for index, group in enumerate(groups):
            stack, origins = cut.result()
            if index + 1 < len(groups):
                cut = helper.submit(layout.windows, groups[index + 1], reader)
            pixels = forward(stack, index + 1 == len(groups))
            placed.append(helper.submit(layout.place, output.result(), group, origins, pixels))
            if progress:
                progress(sum(len(g) for g in groups[: index + 1]), len(spots))
    except BaseException:
        helper.shutdown(wait=True, cancel_futures=True)
        raise
    helper.shutdown(wait=False)  # the thread ends once the last placement is done
    return _after(placed, output.result())


def _after(placed: list[Future[None]], output: np.ndarray) -> Future[np.ndarray]:
    """A future of `output` that completes when every placement has (and fails as the first failing one)."""
    result: Future[np.ndarray] = Future()
    remaining = [len(placed)]

    def one_done(future: Future[None]) -> None:
        error = future.exception()
        if error is not None:
            if not result.done():
                result.set_exception(error)
        else:
            remaining[0] -= 1
            if remaining[0] == 0 and not result.done():
                result.set_result(output)

    for future in placed:
        future.add_done_callback(one_done)
    return result


def upscale_tiled(image: np.ndarray, forward: Forward, *, factor: int, plan: TilePlan, pad: int, border: int,
                  out_dtype: type[np.integer], align: int = 1, progress: Progress | None = None) -> np.ndarray:
    """start_tiled, waited for."""
    return start_tiled(image, forward, factor=factor, plan=plan, pad=pad, border=border, out_dtype=out_dtype,
                       align=align, progress=progress).result()


def upscale_with_retry(image: np.ndarray, forward: Forward, *, factor: int, plan: TilePlan, pad: int, border: int,
                       out_dtype: type[np.integer], align: int = 1, progress: Progress | None = None,
                       on_retry: Callable[[str], None] | None = None) -> Future[np.ndarray]:
    """start_tiled, restarted with half the batch, then half the tile, on out-of-memory (never a partial image)."""
    height, width = image.shape[1:]
    while True:
        try:
            return start_tiled(image, forward, factor=factor, plan=plan, pad=pad, border=border,
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
