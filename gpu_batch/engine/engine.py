"""The engine: image bytes in, upscaled image bytes out. Knows nothing of AWS."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.contract import MAX_STRENGTH, MIN_STRENGTH, strength_in_range
from common.formats import MAX_SCALE, MIN_SCALE, output_size, scale_in_range
from common.settings import Settings

from . import codec
from .alpha import bleed_colour
from .errors import EngineError
from .models import model_spec, network_for
from .runtime import CUDA, RunnerCache, available_gpu_memory, available_host_memory, resolve_device
from .tiling import MIN_TILE, TILE_SIZES, upscale_with_retry

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

# Peak runtime memory per pixel of a tile's padded input, fp32 on CPU (measured, rounded up; see docs/engine.md).
# fp16 on CUDA needs about half.
# Keyed by network; Real-CUGAN's variants share one number per scale (benchmarks/engine_memory.py, 128 and 256
# px tiles: 2x 6.0-6.3 kB, 3x 12.9-13.1 kB, 4x 7.5-8.3 kB; RealSR is x4plus's architecture).
WORK_BYTES_PER_PIXEL = {"x4plus": 14_000, "x4plus-anime": 14_000, "animevideov3": 2_000, "photo-jpeg": 14_000,
                        "cugan-x2": 6_500, "cugan-x3": 13_500, "cugan-x4": 8_500}
CPU_MAX_TILE = 512
GPU_MAX_BATCH = 8


@dataclass(frozen=True, slots=True)
class UpscaleResult:
    data: bytes
    format: str
    content_type: str
    input_width: int
    input_height: int
    output_width: int
    output_height: int
    model: str
    scale: float
    provider: str
    decode_seconds: float
    inference_seconds: float
    encode_seconds: float
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """A decoded input and its output plan, between `prepare` and `infer`."""

    picture: codec.Picture
    model: str
    scale: float
    strength: float
    format: str
    output_size: tuple[int, int]
    decode_seconds: float

    @property
    def input_width(self) -> int:
        return self.picture.width

    @property
    def input_height(self) -> int:
        return self.picture.height

    @property
    def nbytes(self) -> int:
        alpha = self.picture.alpha.nbytes if self.picture.alpha is not None else 0
        return int(self.picture.pixels.nbytes + alpha)


@dataclass(frozen=True, slots=True)
class InferredImage:
    """The network's result, between `infer` and `encode`."""

    prepared: PreparedImage
    color: np.ndarray
    alpha: np.ndarray | None
    inference_seconds: float

    @property
    def nbytes(self) -> int:
        return int(self.color.nbytes + (self.alpha.nbytes if self.alpha is not None else 0))


@dataclass(frozen=True, slots=True)
class TilePlan:
    tile: int
    batch: int


def _work_bytes_per_pixel(network: str) -> int:
    spec = model_spec(network)
    key = f"cugan-x{spec.scale}" if spec.shrink else spec.name
    return WORK_BYTES_PER_PIXEL.get(key, 14_000)


def check_strength(strength: float) -> float:
    """The network's share of the result (see JobOptions.strength)."""
    strength = float(strength)
    if not strength_in_range(strength):
        raise EngineError(f"strength must be within {MIN_STRENGTH:g}..{MAX_STRENGTH:g}, got {strength}")
    return strength


def _blend_faithful(upscaled: np.ndarray, color: np.ndarray, strength: float) -> np.ndarray:
    """`strength` x the network's result + the rest x a Lanczos resize of the input, channel by channel
    (one float plane of the output size at a time)."""
    peak = float(np.iinfo(upscaled.dtype).max)
    size = (upscaled.shape[1], upscaled.shape[0])
    out = np.empty_like(upscaled)
    for c in range(upscaled.shape[2]):
        faithful = _resize_plane(color[..., min(c, color.shape[2] - 1)], size) * (peak * (1.0 - strength))
        faithful += upscaled[..., c] * np.float32(strength)
        out[..., c] = np.clip(np.rint(faithful), 0, peak)
    return out


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not scale_in_range(scale):
        raise EngineError(f"scale must be within {MIN_SCALE:g}..{MAX_SCALE:g}, got {scale}")
    return scale


def _resize_plane(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """High-quality (Lanczos, antialiased) resize of one float plane."""
    return np.asarray(Image.fromarray(plane.astype(np.float32), "F").resize(size, Image.Resampling.LANCZOS))


def _resize_channels(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWxC uint8/uint16 -> size (w, h), Lanczos; 8-bit RGB/L goes through Pillow's integer path."""
    if array.shape[1] == size[0] and array.shape[0] == size[1]:
        return array
    if array.dtype == np.uint8:
        mode = "L" if array.shape[2] == 1 else "RGB"
        resized = Image.fromarray(array[..., 0] if mode == "L" else array, mode).resize(size, Image.Resampling.LANCZOS)
        out = np.asarray(resized)
        return out[..., None] if out.ndim == 2 else out
    peak = float(np.iinfo(array.dtype).max)
    planes = [np.clip(np.rint(_resize_plane(array[..., c], size)), 0, peak) for c in range(array.shape[2])]
    return np.stack(planes, axis=2).astype(array.dtype)


def _to_gray(array: np.ndarray, rows: int = 512) -> np.ndarray:
    """Mean of R, G, B (the network may tint a gray picture slightly), in row blocks to bound memory."""
    gray = np.empty((*array.shape[:2], 1), dtype=array.dtype)
    for top in range(0, array.shape[0], rows):
        block = array[top : top + rows].sum(axis=2, dtype=np.uint32, keepdims=True)
        gray[top : top + rows] = (block + 1) // 3
    return gray


class Engine:
    """Real-ESRGAN upscaler. Cheap to construct; sessions load lazily, once per model, shared by threads."""

    def __init__(self, device: str = "auto", *, settings: Settings | None = None,
                 model_dir: Path | None = None, colour_fix: bool = True) -> None:
        self.settings = settings or Settings.from_env()
        self.colour_fix = colour_fix  # keep the input's low-frequency colour (see colour.py)
        self.device = resolve_device(device)
        self._runners = RunnerCache(self.device, model_dir)

    # --- sessions -------------------------------------------------------------------------------
    def preload(self, model: str = "x4plus", scale: float = 4.0) -> None:
        self._runners.get(network_for(model, scale).name)

    def provider(self, model: str = "x4plus") -> str:
        return self._runners.get(model).provider

    def tile_pad(self, model: str) -> int:
        """Overlap around each tile: settings.tile_pad, raised to what the model needs for invisible seams."""
        return max(self.settings.tile_pad, model_spec(model).min_tile_pad)

    # --- tiles ----------------------------------------------------------------------------------
    def plan_tiles(self, model: str, width: int, height: int, tile_size: int = 0,
                   output_bytes: int = 0) -> TilePlan:
        """Tile from the caller, else settings, else the largest that fits in the memory available."""
        pad = self.tile_pad(model)
        on_gpu = self.provider(model) == CUDA
        per_pixel = _work_bytes_per_pixel(model) // (2 if on_gpu else 1)
        if on_gpu:
            free = available_gpu_memory()
            budget = int((free if free is not None else 8 << 30) * 0.7)
        else:
            budget = int((available_host_memory() - output_bytes) * 0.5)
        requested = tile_size or self.settings.tile_size
        if requested:
            tile = max(MIN_TILE, requested)
        else:
            cap = 10_000 if on_gpu else CPU_MAX_TILE
            fitting = [t for t in TILE_SIZES if t <= cap and (t + 2 * pad) ** 2 * per_pixel <= budget]
            tile = fitting[0] if fitting else MIN_TILE
        tiles = math.ceil(height / min(tile, height)) * math.ceil(width / min(tile, width))
        tile_pixels = (min(tile, height) + 2 * pad) * (min(tile, width) + 2 * pad)
        batch = max(1, min(GPU_MAX_BATCH, tiles, budget // max(1, tile_pixels * per_pixel))) if on_gpu else 1
        return TilePlan(tile, batch)

    def _upscale_array(self, pixels: np.ndarray, model: str, *, tile_size: int, out_dtype: type[np.integer],
                       progress: Progress | None, notes: list[str]) -> np.ndarray:
        """HxWx3 float32 0..1 -> (network's scale)x HxWx3 out_dtype via the network."""
        runner = self._runners.get(model)
        factor = model_spec(model).scale
        h, w = pixels.shape[:2]
        plan = self.plan_tiles(model, w, h, tile_size,
                               output_bytes=h * w * factor * factor * 3 * np.dtype(out_dtype).itemsize)
        log.debug("upscaling %dx%d with %s: tile %d, batch %d", w, h, model, plan.tile, plan.batch)
        # Real-CUGAN: one set of global means for every tile; a single tile computes the same ones itself
        pooled = runner.pooled_means(pixels) if plan.tile < max(h, w) else None
        run = runner.run if pooled is None else functools.partial(runner.run, pooled=pooled)
        return upscale_with_retry(pixels, run, factor=factor, tile=plan.tile, pad=self.tile_pad(model),
                                  batch=plan.batch, out_dtype=out_dtype, progress=progress, on_retry=notes.append,
                                  colour_fix=self.colour_fix, border=model_spec(model).border_pad,
                                  align=model_spec(model).tile_align)

    def _upscale_picture(self, picture: codec.Picture, model: str, scale: float, size: tuple[int, int],
                         tile_size: int, progress: Progress | None,
                         strength: float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
        network = network_for(model, scale).name  # e.g. Real-CUGAN's 2x network for a 2x job
        out_dtype = np.uint16 if picture.bit_depth == 16 else np.uint8
        color = picture.pixels
        if picture.alpha is not None:
            color = bleed_colour(color, picture.alpha)
        rgb = np.repeat(color, 3, axis=2) if picture.is_gray else color
        upscaled = self._upscale_array(np.ascontiguousarray(rgb, dtype=np.float32), network, tile_size=tile_size,
                                       out_dtype=out_dtype, progress=progress, notes=picture.warnings)
        upscaled = _resize_channels(upscaled, size)
        if picture.is_gray:
            upscaled = _to_gray(upscaled)
        if strength < 1.0:
            upscaled = _blend_faithful(upscaled, color, strength)
        alpha = None
        if picture.alpha is not None:
            peak = float(np.iinfo(out_dtype).max)
            # alpha is a coverage mask, not texture: an antialiased Lanczos resize keeps edges clean and costs
            # nothing next to the network
            alpha = np.clip(np.rint(_resize_plane(picture.alpha, size) * peak), 0, peak).astype(out_dtype)
        return upscaled, alpha

    # --- public API -----------------------------------------------------------------------------
    def prepare(self, data: bytes, *, model: str = "x4plus", scale: float = 4.0, output_format: str | None = None,
                strength: float = 1.0) -> PreparedImage:
        """Decode and check (CPU, any thread): everything that can fail on a bad input fails here."""
        network_for(model, _check_scale(scale))
        scale, strength = _check_scale(scale), check_strength(strength)
        started = time.perf_counter()
        picture = codec.decode(data)
        fmt = codec.choose_format(picture, output_format)
        size = output_size(picture.width, picture.height, scale)
        codec.check_encodable(fmt, *size)
        return PreparedImage(picture=picture, model=model, scale=scale, strength=strength, format=fmt,
                             output_size=size, decode_seconds=time.perf_counter() - started)

    def infer(self, prepared: PreparedImage, *, tile_size: int = 0,
              progress: Progress | None = None) -> InferredImage:
        """The network (one image at a time per GPU)."""
        started = time.perf_counter()
        color, alpha = self._upscale_picture(prepared.picture, prepared.model, prepared.scale, prepared.output_size,
                                             tile_size, progress, prepared.strength)
        return InferredImage(prepared=prepared, color=color, alpha=alpha,
                             inference_seconds=time.perf_counter() - started)

    def encode(self, inferred: InferredImage, *, quality: int | None = None) -> UpscaleResult:
        """Encode the result (CPU, any thread)."""
        prepared, picture, fmt = inferred.prepared, inferred.prepared.picture, inferred.prepared.format
        started = time.perf_counter()
        if quality is None:
            quality = {"webp": self.settings.webp_quality, "avif": codec.formats_io.AVIF_QUALITY}.get(
                fmt, self.settings.jpeg_quality)
        encoded_data = codec.encode(inferred.color, inferred.alpha, fmt=fmt, bit_depth=picture.bit_depth,
                                    quality=quality, icc=picture.icc_profile, exif=picture.exif,
                                    notes=picture.warnings, xmp=picture.xmp)
        network = network_for(prepared.model, prepared.scale).name
        return UpscaleResult(
            data=encoded_data, format=fmt, content_type=codec.CONTENT_TYPES[fmt],
            input_width=picture.width, input_height=picture.height, output_width=prepared.output_size[0],
            output_height=prepared.output_size[1], model=prepared.model, scale=prepared.scale,
            provider=self.provider(network), decode_seconds=prepared.decode_seconds,
            inference_seconds=inferred.inference_seconds, encode_seconds=time.perf_counter() - started,
            warnings=tuple(picture.warnings))

    def upscale_bytes(self, data: bytes, *, model: str = "x4plus", scale: float = 4.0,
                      output_format: str | None = None, quality: int | None = None, tile_size: int = 0,
                      progress: Progress | None = None, strength: float = 1.0) -> UpscaleResult:
        """`strength` < 1 blends the network's result with a faithful Lanczos resize (0: no network)."""
        prepared = self.prepare(data, model=model, scale=scale, output_format=output_format, strength=strength)
        return self.encode(self.infer(prepared, tile_size=tile_size, progress=progress), quality=quality)

    def upscale_image(self, img: Image.Image, *, model: str = "x4plus", scale: float = 4.0, tile_size: int = 0,
                      progress: Progress | None = None, strength: float = 1.0) -> Image.Image:
        """PIL in, PIL out (8-bit modes; the byte API is the faithful path for 16-bit and metadata)."""
        network_for(model, _check_scale(scale))
        scale, strength = _check_scale(scale), check_strength(strength)
        mode = img.mode
        base = img.convert("RGBA" if ("A" in mode or "transparency" in img.info) else "RGB") \
            if mode not in ("L", "LA", "RGB", "RGBA") else img
        array = np.asarray(base, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[..., None]
        alpha = None
        if base.mode in ("RGBA", "LA"):
            alpha, array = array[..., -1], array[..., :-1]
        picture = codec.Picture(np.ascontiguousarray(array), alpha, 8, None)
        size = output_size(picture.width, picture.height, scale)
        color, alpha_out = self._upscale_picture(picture, model, scale, size, tile_size, progress, strength)
        out = Image.fromarray(color[..., 0] if picture.is_gray else color, "L" if picture.is_gray else "RGB")
        if alpha_out is not None:
            out.putalpha(Image.fromarray(alpha_out, "L"))
        return out
