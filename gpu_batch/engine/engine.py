"""The engine: image bytes in, upscaled image bytes out, in three stages a pipelined worker runs apart.

`prepare` (decode and every check that can fail on bad input; CPU, any thread), `infer` (the network with its
post-processing on the device: windows in, final pixels out; one thread per GPU), `encode` (everything after
the network, and the encoder; CPU, any thread). `upscale_bytes` runs the three in a row. Knows nothing of AWS.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.contract import MAX_STRENGTH, MIN_STRENGTH, strength_in_range
from common.formats import MAX_SCALE, MIN_SCALE, output_size, scale_in_range
from common.settings import Settings

from . import codec, memory
from .alpha import bleed_colour
from .errors import EngineError
from .models import MODEL_NETWORKS, model_spec, network_for
from .planning import TilePlan, plan_tiles, tile_pad
from .runtime import Pooled, Runner, RunnerCache, RunnerFactory, available_host_memory, load_runner, resolve_device
from .tiling import upscale_with_retry

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

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


def check_strength(strength: float) -> float:
    """The network's share of the result (see JobOptions.strength)."""
    strength = float(strength)
    if not strength_in_range(strength):
        raise EngineError(f"strength must be within {MIN_STRENGTH:g}..{MAX_STRENGTH:g}, got {strength}")
    return strength


def _blend_faithful(upscaled: np.ndarray, planes: np.ndarray, strength: float) -> np.ndarray:
    """`strength` x the network's result + the rest x a Lanczos resize of the input (CxHxW), channel by channel
    (one float plane of the output size at a time)."""
    peak = float(np.iinfo(upscaled.dtype).max)
    size = (upscaled.shape[1], upscaled.shape[0])
    out = np.empty_like(upscaled)
    for c in range(upscaled.shape[2]):
        faithful = _resize_plane(planes[min(c, planes.shape[0] - 1)], size) * (peak * (1.0 - strength))
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


@dataclass(slots=True, eq=False)
class ImageFacts:
    """What the output keeps of the input besides its colour pixels."""

    width: int
    height: int
    alpha: np.ndarray | None  # HxW float32 0..1
    is_gray: bool
    bit_depth: int
    icc_profile: bytes | None
    exif: bytes | None
    xmp: bytes | None
    warnings: list[str]

    @classmethod
    def of(cls, picture: codec.Picture) -> ImageFacts:
        return cls(picture.width, picture.height, picture.alpha, picture.is_gray, picture.bit_depth,
                   picture.icc_profile, picture.exif, picture.xmp, picture.warnings)

    @property
    def nbytes(self) -> int:
        metadata = sum(len(b or b"") for b in (self.icc_profile, self.exif, self.xmp))
        return metadata + (self.alpha.nbytes if self.alpha is not None else 0)


@dataclass(slots=True, eq=False)
class PreparedImage:
    """A decoded, checked image waiting for the GPU (Engine.prepare)."""

    facts: ImageFacts
    network_input: np.ndarray  # CxHxW float32 0..1 (C = 1 or 3; colour under transparent pixels filled)
    model: str
    network: str
    scale: float
    strength: float
    format: str
    output_width: int
    output_height: int
    decode_seconds: float

    @property
    def input_width(self) -> int:
        return self.facts.width

    @property
    def input_height(self) -> int:
        return self.facts.height

    @property
    def nbytes(self) -> int:
        """Host memory it holds (pixels and metadata)."""
        return self.network_input.nbytes + self.facts.nbytes


@dataclass(slots=True, eq=False)
class InferredImage:
    """The network's pixels at its native scale, with what `encode` needs (Engine.infer). Encoded once:
    `encode` takes the pixels, so the encoder's own buffers never sit beside them."""

    facts: ImageFacts
    pixels: Future[np.ndarray] | None  # (fH)x(fW)x3 uint8 (uint16 for 16-bit inputs), complete when placed
    faithful_source: np.ndarray | None  # the network's input, kept only when strength < 1 blends it in
    model: str
    scale: float
    strength: float
    format: str
    provider: str
    output_width: int
    output_height: int
    decode_seconds: float
    inference_seconds: float
    work_ratio: float  # forward work over the image's own pixels (planning.TilePlan)
    windows: int
    pixels_nbytes: int

    @property
    def nbytes(self) -> int:
        """Host memory it holds (pixels and metadata)."""
        source = self.faithful_source.nbytes if self.faithful_source is not None else 0
        return (self.pixels_nbytes if self.pixels is not None else 0) + source + self.facts.nbytes


class Engine:
    """Real-ESRGAN upscaler. Cheap to construct; sessions load lazily, once per model, shared by threads.

    `runner_factory` replaces how networks are loaded (benchmarks/gpu_standin.py injects a GPU stand-in);
    `postprocess="host"` runs today's numpy post-processing instead of the fused graph (benchmarks only)."""

    def __init__(self, device: str = "auto", *, settings: Settings | None = None,
                 model_dir: Path | None = None, colour_fix: bool = True, postprocess: str = "graph",
                 runner_factory: RunnerFactory | None = None) -> None:
        if postprocess not in ("graph", "host"):
            raise ValueError(f"postprocess must be 'graph' or 'host', got {postprocess!r}")
        self.settings = settings or Settings.from_env()
        self.colour_fix = colour_fix  # keep the input's low-frequency colour (see colour.py)
        self.device = resolve_device(device) if runner_factory is None else device
        self._runners = RunnerCache(runner_factory or functools.partial(
            _load, device=self.device, model_dir=model_dir, colour_fix=colour_fix, fused=postprocess == "graph"))

    # --- sessions -------------------------------------------------------------------------------
    def preload(self, model: str = "x4plus", scale: float = 4.0) -> None:
        self._runners.get(network_for(model, scale).name)

    def provider(self, model: str = "x4plus") -> str:
        """The execution provider that runs `model` (a network of it already loaded answers without loading)."""
        for network in MODEL_NETWORKS.get(model, (model_spec(model).name,)):
            loaded = self._runners.loaded_runner(network)
            if loaded is not None:
                return loaded.provider
        return self._runners.get(model_spec(model).name).provider

    def tile_pad(self, model: str) -> int:
        """Overlap around each tile: settings.tile_pad, raised to what the model needs for invisible seams."""
        return tile_pad(model, self.settings.tile_pad)

    # --- tiles ----------------------------------------------------------------------------------
    def plan_tiles(self, model: str, width: int, height: int, tile_size: int = 0, reserve_bytes: int = 0,
                   out_dtype: type[np.integer] = np.uint8) -> TilePlan:
        """Tile from the caller, else settings, else the grid with the least work that fits the memory: the GPU's
        (what the runtime may use once the model is loaded), or on the CPU half of the host's free memory once
        `reserve_bytes` (the image's own peak, memory.peak_bytes) is set aside."""
        runner = self._runners.get(model, out_dtype)
        if runner.device == "cuda":
            budget = runner.memory_budget()
        else:
            budget = int((available_host_memory() - reserve_bytes) * 0.5)
        return plan_tiles(width, height, network=model, memory_budget=budget, device=runner.device,
                          tile_size=tile_size or self.settings.tile_size, pad=self.settings.tile_pad)

    def peak_host_bytes(self, prepared: PreparedImage, tile_size: int = 0) -> int:
        """The most host memory this image needs at any stage (memory.peak_bytes with its tile plan): what a
        pipelined worker adds up for the images it holds at once."""
        facts = prepared.facts
        out_dtype: type[np.integer] = np.uint16 if facts.bit_depth == 16 else np.uint8
        plan = self.plan_tiles(prepared.network, facts.width, facts.height, tile_size, out_dtype=out_dtype)
        return self._peak_bytes(prepared, window_pixels=0 if plan.windows == 1 else
                                plan.batch * plan.window_h * plan.window_w)

    @staticmethod
    def _peak_bytes(prepared: PreparedImage, *, window_pixels: int) -> int:
        facts = prepared.facts
        return memory.peak_bytes(facts.width, facts.height, prepared.scale, fmt=prepared.format,
                                 channels=prepared.network_input.shape[0], bit_depth=facts.bit_depth,
                                 alpha=facts.alpha is not None, factor=model_spec(prepared.network).scale,
                                 window_pixels=window_pixels)

    # --- the three stages -----------------------------------------------------------------------
    def prepare(self, data: bytes, *, model: str, scale: float, output_format: str | None,
                strength: float = 1.0) -> PreparedImage:
        """Decode and check everything that can fail on bad input (UndecodableImageError, EngineError)."""
        started = time.perf_counter()
        scale, strength = _check_scale(scale), check_strength(strength)
        network = network_for(model, scale).name
        picture = codec.decode(data)
        fmt = codec.choose_format(picture, output_format)
        width, height = output_size(picture.width, picture.height, scale)
        codec.check_encodable(fmt, width, height)
        return self._prepared(picture, model, network, scale, strength, fmt, (width, height), started)

    def _prepared(self, picture: codec.Picture, model: str, network: str, scale: float, strength: float, fmt: str,
                  size: tuple[int, int], started: float) -> PreparedImage:
        pixels = picture.pixels if picture.alpha is None else bleed_colour(picture.pixels, picture.alpha)
        planes = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)  # the windows' layout
        return PreparedImage(ImageFacts.of(picture), planes, model, network, scale, strength, fmt, *size,
                             time.perf_counter() - started)

    def infer(self, prepared: PreparedImage, *, tile_size: int = 0,
              progress: Progress | None = None) -> InferredImage:
        """The network over the image (tiled; out of memory retried with smaller tiles). One image at a time
        per GPU: the worker calls it from one thread. It returns after the last forward; the last tile's pixels
        are placed by then or soon after (`encode` waits for them)."""
        started = time.perf_counter()
        facts, network = prepared.facts, prepared.network
        out_dtype: type[np.integer] = np.uint16 if facts.bit_depth == 16 else np.uint8
        runner = self._runners.get(network, out_dtype)
        spec = model_spec(network)
        h, w = facts.height, facts.width
        pixels_nbytes = memory.output_bytes(w, h, spec.scale, facts.bit_depth)
        plan = self.plan_tiles(network, w, h, tile_size, out_dtype=out_dtype,
                               reserve_bytes=self._peak_bytes(prepared, window_pixels=0))
        log.debug("upscaling %dx%d with %s: %s", w, h, network, plan)
        # Real-CUGAN: one set of global means for every tile; a single tile computes the same ones itself
        pooled = runner.pooled_means(prepared.network_input) if plan.windows > 1 else None
        pixels = upscale_with_retry(
            prepared.network_input, functools.partial(_forward, runner, pooled), factor=spec.scale, plan=plan,
            pad=self.tile_pad(network), border=spec.border_pad, align=spec.tile_align, out_dtype=out_dtype,
            progress=progress, on_retry=facts.warnings.append)
        return InferredImage(
            facts=facts, pixels=pixels,
            faithful_source=prepared.network_input if prepared.strength < 1.0 else None, model=prepared.model,
            scale=prepared.scale, strength=prepared.strength, format=prepared.format, provider=runner.provider,
            output_width=prepared.output_width, output_height=prepared.output_height,
            decode_seconds=prepared.decode_seconds, inference_seconds=time.perf_counter() - started,
            work_ratio=plan.work_ratio(w, h), windows=plan.windows, pixels_nbytes=pixels_nbytes)

    def encode(self, inferred: InferredImage, *, quality: int | None = None) -> UpscaleResult:
        """Everything after the network (exact output size, gray, strength, alpha, metadata) and the encoder.
        Thread-safe: encodes of different images run in parallel."""
        started = time.perf_counter()
        fmt, facts = inferred.format, inferred.facts
        if quality is None:
            quality = {"webp": self.settings.webp_quality, "avif": codec.formats_io.AVIF_QUALITY}.get(
                fmt, self.settings.jpeg_quality)
        data = codec.encode_handed(list(self.finish_pixels(inferred)), fmt=fmt, bit_depth=facts.bit_depth,
                                   quality=quality, icc=facts.icc_profile, exif=facts.exif, notes=facts.warnings,
                                   xmp=facts.xmp)
        return UpscaleResult(
            data=data, format=fmt, content_type=codec.CONTENT_TYPES[fmt], input_width=facts.width,
            input_height=facts.height, output_width=inferred.output_width,
            output_height=inferred.output_height, model=inferred.model, scale=inferred.scale,
            provider=inferred.provider, decode_seconds=inferred.decode_seconds,
            inference_seconds=inferred.inference_seconds, encode_seconds=time.perf_counter() - started,
            warnings=tuple(facts.warnings))

    def finish_pixels(self, inferred: InferredImage) -> tuple[np.ndarray, np.ndarray | None]:
        """The output's colour and alpha arrays (out dtype) from the network's pixels; takes them from `inferred`."""
        pixels, inferred.pixels = inferred.pixels, None
        if pixels is None:
            raise EngineError("this image was encoded already (InferredImage is encoded once)")
        upscaled = pixels.result()
        size = (inferred.output_width, inferred.output_height)
        upscaled = _resize_channels(upscaled, size)
        if inferred.facts.is_gray:
            upscaled = _to_gray(upscaled)
        if inferred.strength < 1.0:
            assert inferred.faithful_source is not None
            upscaled = _blend_faithful(upscaled, inferred.faithful_source, inferred.strength)
        alpha = None
        if inferred.facts.alpha is not None:
            peak = float(np.iinfo(upscaled.dtype).max)
            # alpha is a coverage mask, not texture: an antialiased Lanczos resize keeps edges clean and costs
            # nothing next to the network
            alpha = np.clip(np.rint(_resize_plane(inferred.facts.alpha, size) * peak), 0, peak).astype(upscaled.dtype)
        return upscaled, alpha

    # --- whole calls ----------------------------------------------------------------------------
    def upscale_bytes(self, data: bytes, *, model: str = "x4plus", scale: float = 4.0,
                      output_format: str | None = None, quality: int | None = None, tile_size: int = 0,
                      progress: Progress | None = None, strength: float = 1.0) -> UpscaleResult:
        """`encode(infer(prepare(...)))`. `strength` < 1 blends the network's result with a faithful Lanczos
        resize (0: no network)."""
        prepared = self.prepare(data, model=model, scale=scale, output_format=output_format, strength=strength)
        return self.encode(self.infer(prepared, tile_size=tile_size, progress=progress), quality=quality)

    def upscale_image(self, img: Image.Image, *, model: str = "x4plus", scale: float = 4.0, tile_size: int = 0,
                      progress: Progress | None = None, strength: float = 1.0) -> Image.Image:
        """PIL in, PIL out (8-bit modes; the byte API is the faithful path for 16-bit and metadata)."""
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
        gray = picture.is_gray
        prepared = self._prepared(picture, model, network_for(model, scale).name, scale, strength, "png",
                                  output_size(picture.width, picture.height, scale), time.perf_counter())
        color, alpha_out = self.finish_pixels(self.infer(prepared, tile_size=tile_size, progress=progress))
        out = Image.fromarray(np.ascontiguousarray(color[..., 0] if gray else color), "L" if gray else "RGB")
        if alpha_out is not None:
            out.putalpha(Image.fromarray(alpha_out, "L"))
        return out


def _forward(runner: Runner, pooled: Pooled | None, windows: np.ndarray, last: bool) -> np.ndarray:
    return runner.forward(windows, pooled, last=last)


def _load(model: str, out_dtype: type[np.integer], *, device: str, model_dir: Path | None, colour_fix: bool,
          fused: bool) -> Runner:
    return load_runner(model, device, model_dir, out_dtype=out_dtype, colour_fix=colour_fix, fused=fused)
