"""The engine's three stages in a small pipeline of their own, and photo-like test inputs (benchmarks only).

`drain_with_engine_pipeline` is prepare N+1 | infer N | encode N-1 without AWS: what a pipelined worker loop
can reach with the engine (benchmarks/gpu_busy.py --loop engine; benchmarks/gpu/busy.py on a real GPU).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image

from gpu_batch.engine import Engine, PreparedImage, UpscaleResult

MODEL = "x4plus"
# Input sizes (4:3) by megapixels.
SIZES = {"0.25": (577, 433), "1": (1155, 866), "4": (2309, 1732), "12": (4000, 3000)}


def photo(width: int, height: int, seed: int) -> bytes:
    """A photo-like JPEG (smooth shapes, mid-frequency texture, sensor noise), made in C code and quickly."""
    rng = np.random.default_rng(seed)
    shapes = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height),
                                                                                    Image.Resampling.BICUBIC)
    texture = Image.fromarray(rng.integers(0, 256, (max(1, height // 12), max(1, width // 12), 3), dtype=np.uint8))
    image = Image.blend(shapes, texture.resize((width, height), Image.Resampling.BICUBIC), 0.35)
    image = Image.blend(image, Image.effect_noise((width, height), 40).convert("RGB"), 0.06)
    stream = io.BytesIO()
    image.save(stream, "JPEG", quality=90)
    return stream.getvalue()


def drain_with_engine_pipeline(engine: Engine, photos: Sequence[bytes], *, fmt: str, model: str = MODEL,
                               encoders: int = 2, on_result: Callable[[UpscaleResult], None] | None = None) -> None:
    """prepare N+1 | infer N | encode N-1: one thread decodes ahead, this one runs the GPU stage, `encoders`
    threads encode (at most that many images wait for or in the encoders, which bounds memory)."""
    with ThreadPoolExecutor(1, thread_name_prefix="prepare") as preparer, \
            ThreadPoolExecutor(encoders, thread_name_prefix="encode") as encoder:
        def prepare(data: bytes) -> Future[PreparedImage]:
            return preparer.submit(engine.prepare, data, model=model, scale=4.0, output_format=fmt)

        ahead = prepare(photos[0]) if photos else None
        encoding: list[Future[UpscaleResult]] = []
        for i in range(len(photos)):
            assert ahead is not None
            prepared = ahead.result()
            ahead = prepare(photos[i + 1]) if i + 1 < len(photos) else None
            inferred = engine.infer(prepared)
            while len(encoding) >= encoders:  # the encoders are full: wait for the oldest
                result = encoding.pop(0).result()
                if on_result:
                    on_result(result)
            encoding.append(encoder.submit(engine.encode, inferred))
        for future in encoding:
            result = future.result()
            if on_result:
                on_result(result)
