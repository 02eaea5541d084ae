"""Restoration quality on real photos: bicubic and Lanczos vs the engine's models.

Each scikit-image photo is centre-cropped to --size (ground truth), reduced 4x with bicubic and saved as
JPEG quality 30 (a typical messy web image). Every method upscales that JPEG 4x; we report PSNR and SSIM
against the ground truth and BRISQUE (no-reference, lower is better; the `brisque` package's shipped
model, run offline) and texture keeping, within the truth's most textured quarter of pixels: `texture`, the
result's high-frequency energy (what a 2 px Gaussian blur removes) over the truth's (1 = as much, < 1
smoothed away, > 1 more), and `hf corr`, the correlation of the two (1 = the true texture, 0 = invented).
`brisque` imports OpenCV only for one half-size cubic resize and trips on numpy 2
scalars, so this script supplies a tiny `cv2` stand-in and a numpy-2-safe feature scaler (a monkeypatch
here; site-packages untouched). Writes a side-by-side crop grid to docs/images/quality.png.

    .venv/bin/python benchmarks/quality.py [--size 256] [--models x4plus animevideov3]
    .venv/bin/python benchmarks/quality.py --models x4plus photo-jpeg x4plus@0.5 illustration \
        --photos brick gravel grass astronaut text coffee --grid docs/images/models.png

A model name `name@s` runs it with strength s (blended with a Lanczos resize).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import types
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
GRID_PATH = Path(__file__).resolve().parent.parent / "docs" / "images" / "quality.png"


def _install_brisque_shims():
    """Offline BRISQUE on numpy 2 without OpenCV: a cv2.resize stand-in and a scalar-safe feature scaler."""
    if "cv2" not in sys.modules:
        cv2 = types.ModuleType("cv2")
        cv2.INTER_CUBIC = 2

        def resize(image, dsize, fx=None, fy=None, interpolation=None):
            height, width = image.shape[:2]
            size = (round(width * fx), round(height * fy)) if dsize is None else dsize
            return np.asarray(Image.fromarray(image.astype(np.float32), "F").resize(size, Image.Resampling.BICUBIC))

        cv2.resize = resize
        sys.modules["cv2"] = cv2
    from brisque import BRISQUE

    original = BRISQUE.scale_features

    def scale_features(self, features):
        return original(self, [float(np.ravel(np.asarray(f, dtype=np.float64))[0]) for f in features])

    BRISQUE.scale_features = scale_features
    return BRISQUE(url=False)


def _high_frequency(image: np.ndarray) -> np.ndarray:
    gray = image.astype(np.float64).mean(axis=2)
    return gray - gaussian_filter(gray, 2.0)


def texture_kept(truth: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """In the truth's most textured quarter of pixels: high-frequency energy of `out` over the truth's (how
    much texture), and the correlation of the two high-frequency signals (whether it is the true texture)."""
    detail_truth, detail_out = _high_frequency(truth), _high_frequency(out)
    local = gaussian_filter(detail_truth**2, 4.0)
    mask = local >= np.quantile(local, 0.75)
    energy = float(np.sqrt((detail_out[mask] ** 2).mean() / max((detail_truth[mask] ** 2).mean(), 1e-9)))
    return energy, float(np.corrcoef(detail_truth[mask], detail_out[mask])[0, 1])


def degrade(truth: np.ndarray, factor: int = 4) -> bytes:
    height, width = truth.shape[:2]
    small = Image.fromarray(truth).resize((width // factor, height // factor), Image.Resampling.BICUBIC)
    stream = io.BytesIO()
    small.save(stream, "JPEG", quality=30)
    return stream.getvalue()


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=2)
    if image.shape[2] == 4:  # e.g. the scikit-image logo: composite on white
        alpha = image[..., 3:].astype(np.float32) / 255
        image = np.rint(image[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    height, width = image.shape[:2]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return np.ascontiguousarray(image[top : top + size, left : left + size, :3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="ground-truth crop side (input is a quarter)")
    parser.add_argument("--models", nargs="*", default=["x4plus", "animevideov3"])
    parser.add_argument("--scale", type=int, default=4, help="reduce by this, upscale by this")
    parser.add_argument("--photos", nargs="*", default=list(PHOTOS), help="scikit-image data names")
    parser.add_argument("--grid", type=Path, default=GRID_PATH, help="where the side-by-side grid goes")
    parser.add_argument("--grid-crop", type=int, default=128)
    parser.add_argument("--no-colour-fix-row", action="store_true", help="skip x4plus without the colour fix")
    args = parser.parse_args()

    from gpu_batch.engine import Engine

    brisque = _install_brisque_shims()
    engine = Engine(device="cpu")
    engine_raw = Engine(device="cpu", colour_fix=False)
    def classic(resample):
        return lambda jpeg, size: Image.open(io.BytesIO(jpeg)).convert("RGB").resize(size, resample)

    methods: dict[str, object] = {"bicubic": classic(Image.Resampling.BICUBIC),
                                  "lanczos": classic(Image.Resampling.LANCZOS)}
    for name in args.models:
        model, _, strength = name.partition("@")
        methods[name] = lambda jpeg, size, m=model, s=float(strength or 1): Image.open(io.BytesIO(
            engine.upscale_bytes(jpeg, model=m, scale=args.scale, output_format="png", strength=s).data))
    if "x4plus" in args.models and not args.no_colour_fix_row:
        methods["x4plus (no colour fix)"] = lambda jpeg, size: Image.open(io.BytesIO(
            engine_raw.upscale_bytes(jpeg, model="x4plus", scale=args.scale, output_format="png").data))

    rows, tiles = [], []
    header = (f"{'photo':10} {'method':24} {'PSNR dB':>8} {'SSIM':>6} {'BRISQUE':>8} {'texture':>7} {'hf corr':>7} "
              f"{'seconds':>8}")
    print(f"ground truth {args.size}x{args.size}, input {args.size // args.scale}x{args.size // args.scale} JPEG q30")
    print(header)
    print("-" * len(header))
    for photo in args.photos:
        truth = centre_crop(getattr(data, photo)(), args.size)
        truth = np.ascontiguousarray(truth[: truth.shape[0] // args.scale * args.scale,
                                           : truth.shape[1] // args.scale * args.scale])
        jpeg = degrade(truth, args.scale)
        size = (truth.shape[1], truth.shape[0])
        row_tiles = [("input (nearest)", np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB").resize(
            size, Image.Resampling.NEAREST)))]
        for name, method in methods.items():
            started = time.perf_counter()
            out = np.asarray(method(jpeg, size).convert("RGB"))
            seconds = time.perf_counter() - started
            psnr = peak_signal_noise_ratio(truth, out, data_range=255)
            ssim = structural_similarity(truth, out, channel_axis=2, data_range=255)
            score = float(brisque.score(out))
            texture, correlation = texture_kept(truth, out)
            rows.append((photo, name, psnr, ssim, score, texture, correlation))
            print(f"{photo:10} {name:24} {psnr:8.2f} {ssim:6.3f} {score:8.1f} {texture:7.2f} {correlation:7.2f} "
                  f"{seconds:8.1f}", flush=True)
            if "no colour fix" not in name:
                row_tiles.append((name, out))
        row_tiles.append(("ground truth", truth))
        print(f"{photo:10} {'ground truth':24} {'':>8} {'':>6} {float(brisque.score(truth)):8.1f}")
        tiles.append((photo, row_tiles))

    print("-" * len(header))
    for name in methods:
        picked = [r for r in rows if r[1] == name]
        print(f"{'mean':10} {name:24} {np.mean([r[2] for r in picked]):8.2f} {np.mean([r[3] for r in picked]):6.3f} "
              f"{np.mean([r[4] for r in picked]):8.1f} {np.mean([r[5] for r in picked]):7.2f} "
              f"{np.mean([r[6] for r in picked]):7.2f}")
    write_grid(tiles, args.grid_crop, args.grid)


def write_grid(tiles, crop: int, path: Path = GRID_PATH) -> None:
    label_h = 14
    columns = len(tiles[0][1])
    grid = Image.new("RGB", (columns * crop, len(tiles) * (crop + label_h)), "white")
    draw = ImageDraw.Draw(grid)
    for row, (photo, row_tiles) in enumerate(tiles):
        for column, (name, image) in enumerate(row_tiles):
            height, width = image.shape[:2]
            top, left = (height - crop) // 2, (width - crop) // 2
            x, y = column * crop, row * (crop + label_h)
            grid.paste(Image.fromarray(image[top : top + crop, left : left + crop]), (x, y + label_h))
            draw.text((x + 2, y + 1), f"{photo}: {name}" if column == 0 else name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
