"""Encoder effort for a GPU host: bytes against CPU seconds for the PNG, WebP, AVIF (and JPEG) settings.

The content is what the worker really encodes: a network's 4x output of a photo (animevideov3 on a 512x384
crop, x4plus on a 160x120 crop; CPU inference, so the crops are small), plus the bicubic upscale the GPU
stand-in (benchmarks/gpu_standin.py) hands the encoders in benchmarks/gpu_busy.py, to show how its content
compares. Each row: one encode through the engine's own encoder (codec.encode with that setting), CPU seconds of
the whole process (AVIF's encoder threads included) and wall seconds per output megapixel, the bytes, and the
PSNR of the decoded file against the pixels encoded (lossy formats: what the setting costs in fidelity).

    .venv/bin/python benchmarks/encoder_effort.py [--repeats 2] [--formats png webp avif jpeg]
"""

from __future__ import annotations

import argparse
import io
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image
from skimage import data

from gpu_batch.engine import Engine, codec, formats_io

SETTINGS = {
    "png": ("compress_level", [1, 2, 3, 6, 9]),
    "webp": ("method", [0, 1, 2, 4, 6]),
    "avif": ("speed", [6, 7, 8, 9, 10]),
    "jpeg": ("optimize", [False, True]),
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def encoder_setting(fmt: str, value: object) -> Iterator[None]:
    """The engine's encoder with one setting changed (the names codec.py and formats_io.py read)."""
    name = {"png": "PNG_COMPRESS_LEVEL", "webp": "WEBP_METHOD", "jpeg": "JPEG_OPTIMIZE"}.get(fmt)
    module, attribute = (formats_io, "AVIF_SPEED") if fmt == "avif" else (codec, name)
    assert attribute is not None
    saved = getattr(module, attribute)
    setattr(module, attribute, value)
    try:
        yield
    finally:
        setattr(module, attribute, saved)


def contents() -> list[tuple[str, np.ndarray]]:
    engine = Engine(device="cpu")
    found = []
    for label, photo, model, crop in (("animevideov3 out", data.chelsea(), "animevideov3", (384, 512)),
                                      ("x4plus out", data.astronaut(), "x4plus", (120, 160))):
        h, w = crop
        image = Image.fromarray(np.ascontiguousarray(photo[:h, :w]))
        found.append((label, np.asarray(engine.upscale_image(image, model=model))))
        if model == "animevideov3":
            found.append(("bicubic (stand-in)", np.asarray(image.resize((w * 4, h * 4), Image.Resampling.BICUBIC))))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="best of")
    parser.add_argument("--formats", nargs="*", default=list(SETTINGS))
    args = parser.parse_args()
    quality = {"jpeg": 95, "webp": 95, "avif": formats_io.AVIF_QUALITY, "png": 0}
    print(f"{'content':20} {'format':6} {'setting':18} {'MB/out MP':>10} {'CPU s/out MP':>13} {'wall s/out MP':>14} "
          f"{'PSNR dB':>8}")
    for label, pixels in contents():
        megapixels = pixels.shape[0] * pixels.shape[1] / 1e6
        for fmt in args.formats:
            name, values = SETTINGS[fmt]
            for value in values:
                best_cpu = best_wall = float("inf")
                encoded = b""
                with encoder_setting(fmt, value):
                    for _ in range(args.repeats):
                        cpu, wall = cpu_seconds(), time.perf_counter()
                        encoded = codec.encode(pixels, None, fmt=fmt, bit_depth=8, quality=quality[fmt], icc=None,
                                               exif=None, notes=[])
                        best_cpu = min(best_cpu, cpu_seconds() - cpu)
                        best_wall = min(best_wall, time.perf_counter() - wall)
                decoded = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"), dtype=np.float64)
                mse = float(np.mean((decoded - pixels) ** 2))
                psnr = 10 * np.log10(255.0**2 / mse) if mse else float("inf")
                print(f"{label:20} {fmt:6} {f'{name}={value}':18} {len(encoded) / 1e6 / megapixels:10.3f} "
                      f"{best_cpu / megapixels:13.3f} {best_wall / megapixels:14.3f} {psnr:8.2f}", flush=True)


if __name__ == "__main__":
    main()
