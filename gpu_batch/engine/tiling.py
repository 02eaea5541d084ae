"""Run a 4x network over an image of any size in tiles of one fixed shape, into a preallocated output.

Every tile has the same input shape (tile + 2*pad on each axis, or the whole bordered image when that is
smaller), so the runtime plans once. The image is reflect-padded by a small border once (the reference runner uses
10 px; models choose theirs, see models.py); each tile window reaches `pad` pixels past its centre towards interior
seams, and windows at the image edge are shifted inward so they start at that border (the whole-image
run sees exactly the same border). The last row/column of tiles is shifted back to end at the image
edge instead of feeding padding. Each tile's centre is quantized straight into the uint8/uint16 output
buffer, so peak memory is the output buffer plus one batch of tiles, whatever the input size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .colour import match_low_frequency
from .errors import EngineOutOfMemoryError

RunBatch = Callable[[np.ndarray], np.ndarray]  # float32 NCHW -> float32 NCHW at `factor` x
Progress = Callable[[int, int], None]

TILE_SIZES = (1024, 768, 512, 384, 256, 192, 128, 96, 64, 48, 32)  # CPU stops at 512
MIN_TILE = 32
BORDER_PAD = 10  # default reflect pad at the image edges (the ncnn reference's); models set their own


@dataclass(frozen=True, slots=True)
class TileSpot:
    y: int  # top-left of the tile's centre in the (unpadded) input
    x: int


def tile_spots(height: int, width: int, tile_h: int, tile_w: int) -> list[TileSpot]:
    def starts(size: int, tile: int) -> list[int]:
        points = list(range(0, max(size - tile, 0) + 1, tile))
        if points[-1] + tile < size:
            points.append(size - tile)
        return points

    return [TileSpot(y, x) for y in starts(height, tile_h) for x in starts(width, tile_w)]


def _batches(spots: list[TileSpot], size: int) -> Iterator[list[TileSpot]]:
    for start in range(0, len(spots), size):
        yield spots[start : start + size]


def reflect_pad(image: np.ndarray, pad: int) -> np.ndarray:
    """HxWxC float32 -> (H+2p)x(W+2p)xC; 'symmetric' where the image is too small to reflect."""
    mode: Literal["reflect", "symmetric"] = "reflect" if min(image.shape[:2]) > pad else "symmetric"
    return np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode=mode)


def _window_start(centre: int, pad: int, border: int, size: int, window: int, align: int = 1) -> int:
    """Start of a tile window in unpadded coordinates: `pad` before the centre, within the bordered image.

    With `align` > 1 the start moves back to a multiple of `align` past the border, so a network with strided
    stages (Real-CUGAN) sees every tile in the same phase as the whole image; the last window, which must end
    at the bordered edge, keeps its place when moving it would uncover its centre."""
    start = min(max(centre - pad, -border), size + border - window)
    aligned = start - (start + border) % align
    return aligned if aligned >= -border and aligned + window >= min(centre + window - 2 * pad, size) else start


def upscale_tiled(image: np.ndarray, run: RunBatch, *, factor: int, tile: int, pad: int, batch: int,
                  out_dtype: type[np.integer], progress: Progress | None = None,
                  colour_fix: bool = True, border: int = BORDER_PAD, align: int = 1) -> np.ndarray:
    """image: HxWx3 float32 0..1 -> (H*factor)x(W*factor)x3 `out_dtype`, clipped and rounded."""
    height, width = image.shape[:2]
    tile_h, tile_w = min(tile, height), min(tile, width)
    spots = tile_spots(height, width, tile_h, tile_w)
    padded = reflect_pad(image, border)
    in_h, in_w = min(tile_h + 2 * pad, height + 2 * border), min(tile_w + 2 * pad, width + 2 * border)
    peak = float(np.iinfo(out_dtype).max)
    output = np.empty((height * factor, width * factor, image.shape[2]), dtype=out_dtype)
    done = 0
    if progress:
        progress(0, len(spots))
    for group in _batches(spots, max(1, batch)):
        stack = np.empty((len(group), image.shape[2], in_h, in_w), dtype=np.float32)
        origins = []
        for i, spot in enumerate(group):
            top = _window_start(spot.y, pad, border, height, in_h, align)
            left = _window_start(spot.x, pad, border, width, in_w, align)
            origins.append(((spot.y - top) * factor, (spot.x - left) * factor))
            window = padded[top + border : top + border + in_h, left + border : left + border + in_w]
            stack[i] = window.transpose(2, 0, 1)
        result = run(stack)
        if colour_fix:
            result = match_low_frequency(stack, np.array(result, dtype=np.float32, copy=False), factor)
        for i, (spot, (y0, x0)) in enumerate(zip(group, origins, strict=True)):
            centre = result[i, :, y0 : y0 + tile_h * factor, x0 : x0 + tile_w * factor].transpose(1, 2, 0)
            target = output[spot.y * factor : (spot.y + tile_h) * factor, spot.x * factor : (spot.x + tile_w) * factor]
            np.clip(centre, 0.0, 1.0, out=centre)
            target[...] = np.rint(centre * peak)
        done += len(group)
        if progress:
            progress(done, len(spots))
    return output


def upscale_with_retry(image: np.ndarray, run: RunBatch, *, factor: int, tile: int, pad: int, batch: int,
                       out_dtype: type[np.integer], progress: Progress | None = None,
                       on_retry: Callable[[str], None] | None = None, colour_fix: bool = True,
                       border: int = BORDER_PAD, align: int = 1) -> np.ndarray:
    """upscale_tiled, restarted with halved batch then smaller tiles on out-of-memory (never a partial image)."""
    while True:
        try:
            return upscale_tiled(image, run, factor=factor, tile=tile, pad=pad, batch=batch,
                                 out_dtype=out_dtype, progress=progress, colour_fix=colour_fix,
                                 border=border, align=align)
        except (EngineOutOfMemoryError, MemoryError) as exc:
            if batch > 1:
                batch //= 2
            elif tile // 2 >= MIN_TILE:
                tile //= 2
            else:
                raise EngineOutOfMemoryError(
                    f"out of memory even with {tile}px tiles, one per batch: {exc}") from exc
            if on_retry:
                on_retry(f"out of memory; retried with tile {tile}, batch {batch}")
