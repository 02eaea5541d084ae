"""How busy the GPU stays, predicted without a GPU: the real worker loop with the GPU stand-in engine.

Each cell (GPU profile x photo size x output format) uploads photos to the local stack's emulator (moto
server, its own process), runs intake on them (the real validation, records and work items), then drains the
work queue with the real worker loop in this process (`drain_with_worker`, the one function that knows the
loop) whose engine is `benchmarks/gpu_standin.py`'s: production code everywhere except the network forward,
which sleeps (no GIL) as long as that GPU would take. Printed per cell:

    gpu_busy PROFILE SIZE FORMAT PERCENT S_PER_IMAGE [today PERCENT S_PER_IMAGE]

PERCENT = modelled forward seconds / wall seconds while images flow: from the first forward of the first image
to the first forward of the last one (whole image periods, steady state), so neither the first image's
download and decode nor the last one's encode and upload count; capped by what the loop's encoders sustain
(encodes at once x forward seconds / encode seconds per image), since with few images per cell a backlog of
encodes would only stall images the cell does not have. S_PER_IMAGE is the period per image that gives. The
worker runs as it would on the profile's host (encode threads = its vCPUs less one), but every CPU step runs on
this machine's cores, which are fewer than any profile's host has: where the CPU bounds a cell, the figure is a
floor for that host.
`--today` runs each cell again as before this change (the serial worker loop: one image received, upscaled,
encoded, uploaded and settled before the next; numpy post-processing on the host after a float32 copy back;
fixed 1024 px tiles; the old encoder settings) and prints both side by side. WebP cells whose 4x output is more
than WebP can hold (common.formats.OUTPUT_MAX_PIXELS: intake refuses it) run at the largest scale it accepts,
printed as e.g. `webp@3.34x` (the network's forward is the same). `--loop engine` drives
the engine's three stages in a small pipeline of its own instead of the worker loop (prepare N+1 | infer N |
encode N-1, no AWS): the bound a pipelined worker loop can reach with this engine.

    .venv/bin/python benchmarks/gpu_busy.py [--profiles a10g l4 h100] [--sizes 1 4 12] \
        [--formats jpeg png webp avif] [--today] [--loop worker|engine] [--target-seconds 12]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine_pipeline import MODEL, SIZES, drain_with_engine_pipeline, photo
from benchmarks.gpu_standin import PROFILES, ForwardLog, standin_engine
from common import aws
from common.contract import OutputFormat
from common.formats import OUTPUT_MAX_PIXELS, output_size
from common.jobs import JobStore
from common.lifecycle import JobLifecycle
from common.notify import Notifier
from common.settings import Settings
from common.work_queue import WorkQueue
from gpu_batch.engine import Engine, InferredImage, UpscaleResult, codec, formats_io
from gpu_batch.engine.planning import plan_tiles

# The encoder settings before this change, for --today.
TODAY_ENCODERS = ((codec, "PNG_COMPRESS_LEVEL", 6), (codec, "WEBP_METHOD", 4), (codec, "JPEG_OPTIMIZE", True),
                  (formats_io, "AVIF_SPEED", 6))
TODAY_TILE = 1024
ENGINE_LOOP_ENCODERS = 2  # encode threads of --loop engine (this machine has 2 cores)
# Images per cell: the default run (3 profiles x 3 sizes x 4 formats) stays near 20 minutes on 2 cores.
MAX_IMAGES = 8


@dataclass
class Cell:
    profile: str
    size: str
    fmt: str
    today: bool
    images: int


def timed_encodes(engine: Engine) -> list[float]:
    """Each encode's wall seconds, appended as the engine encodes (upscale_bytes too)."""
    seconds: list[float] = []
    encode = engine.encode

    def timed(inferred: InferredImage, *, quality: int | None = None) -> UpscaleResult:
        result = encode(inferred, quality=quality)
        seconds.append(result.encode_seconds)
        return result

    engine.encode = timed  # type: ignore[method-assign]
    return seconds


@contextlib.contextmanager
def todays_encoders(today: bool) -> Iterator[None]:
    saved = [(module, name, getattr(module, name)) for module, name, _ in TODAY_ENCODERS]
    if today:
        for module, name, value in TODAY_ENCODERS:
            setattr(module, name, value)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


# --- the worker loop on the local stack ----------------------------------------------------------------
class LocalStackRun:
    """The emulator with the deployed resources, intake, and the worker's collaborators."""

    def __init__(self) -> None:
        from local_stack.emulator import MotoServer

        for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}.items():
            os.environ.setdefault(name, value)
        self.emulator = MotoServer()
        self.settings = Settings()

    def __enter__(self) -> LocalStackRun:
        from local_stack.resources import create_resources

        endpoint = self.emulator.start()
        settings = Settings(endpoint_url=endpoint, worker_idle_seconds=2, work_visibility_seconds=300,
                            max_item_seconds=1800)
        resources = create_resources(settings)
        self.settings = settings.replace(topic_arn=resources.topic_arn, work_queue_url=resources.work_queue_url)
        self.s3 = aws.client("s3", self.settings)
        store = JobStore(dynamodb_client=aws.client("dynamodb", self.settings), table_name=self.settings.jobs_table)
        self.lifecycle = JobLifecycle(store=store, notifier=Notifier(
            sns_client=aws.client("sns", self.settings), topic_arn=self.settings.topic_arn,
            upload_prefix=self.settings.upload_prefix))
        self.queue = WorkQueue(sqs_client=aws.client("sqs", self.settings), queue_url=self.settings.work_queue_url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.emulator.stop()

    def submit(self, photos: Sequence[bytes], *, fmt: str, scale: float, tag: str) -> None:
        from functions.intake.intake import Intake, Outcome
        from functions.intake.s3_events import UploadEvent

        intake = Intake(self.settings, s3=self.s3, lifecycle=self.lifecycle, work_queue=self.queue, scaler=None)
        for i, data in enumerate(photos):
            key = f"{self.settings.upload_prefix}{tag}/{i:03d}.jpg"
            put = self.s3.put_object(Bucket=self.settings.input_bucket, Key=key, Body=data,
                                     Metadata={"model": MODEL, "format": fmt, "scale": f"{scale:g}"})
            result = intake.process(UploadEvent(self.settings.input_bucket, key, len(data), put["ETag"].strip('"'),
                                                put.get("VersionId"), "ObjectCreated:Put"))
            if result.outcome is not Outcome.QUEUED:
                raise RuntimeError(f"intake did not queue {key}: {result}")

    def clear_outputs(self) -> int:
        """Delete every output version (the emulator keeps them in memory); returns how many were done."""
        bucket = self.settings.output_bucket
        versions = self.s3.list_object_versions(Bucket=bucket).get("Versions", [])
        for version in versions:
            self.s3.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        return len(versions)


def drain_with_worker(run: LocalStackRun, engine: Engine, *, serial: bool, encode_workers: int) -> int:
    """The one place that knows the worker loop: gpu_batch.worker.loop.run_worker as on main (a pipeline:
    prefetch | GPU | encode pool), or with `serial` (today's design) one delivery after another, each
    received, claimed, downloaded, upscaled, encoded, uploaded and settled before the next. Returns how many
    encodes the loop runs at once: `encode_workers`, what the loop's default gives on the profile's host (its
    vCPUs less one), though the threads share this machine's cores."""
    from gpu_batch.worker.item import Worker, process_delivery
    from gpu_batch.worker.loop import run_worker
    from gpu_batch.worker.runtime import SystemClock

    settings = run.settings.replace(encode_workers=encode_workers)
    worker = Worker(settings=settings, engine=engine, s3=run.s3, lifecycle=run.lifecycle, queue=run.queue,
                    clock=SystemClock())
    if not serial:
        run_worker(worker)
        return encode_workers
    while (delivery := run.queue.receive(wait_seconds=1, visibility_seconds=run.settings.work_visibility_seconds)):
        process_delivery(worker, delivery)
    return 1


def largest_scale(size: str, fmt: str) -> float:
    """4x, or the largest scale whose output the format can hold (intake refuses larger WebP outputs)."""
    width, height = SIZES[size]
    limit = OUTPUT_MAX_PIXELS.get(OutputFormat(fmt))
    if limit is None or width * height * 16 <= limit:
        return 4.0
    scale = math.floor(math.sqrt(limit / (width * height)) * 100) / 100
    while math.prod(output_size(width, height, scale)) > limit:
        scale -= 0.01
    return round(scale, 2)


# --- cells ---------------------------------------------------------------------------------------------
def images_for(profile: str, size: str, target_seconds: float, settings: Settings) -> int:
    """Enough images for about `target_seconds` of modelled forward time (2 to MAX_IMAGES)."""
    width, height = SIZES[size]
    plan = plan_tiles(width, height, network=MODEL, memory_budget=PROFILES[profile].memory_budget())
    seconds = plan.work / (PROFILES[profile].network_mps(MODEL) * 1e6)
    return int(min(MAX_IMAGES, max(2, round(target_seconds / seconds))))


@dataclass(frozen=True, slots=True)
class Measured:
    flowing: float  # forward share of the image period while images flow
    period: float  # seconds per image
    forward: float  # modelled forward seconds per image
    encode: float  # encode wall seconds per image
    encoders: int  # encodes the loop runs at once

    @property
    def busy(self) -> float:
        """The flowing share, capped by what the encoders sustain: with few images in a cell the last encodes
        finish after the last forward, so a backlog the next images would wait for does not show in the period."""
        return min(self.flowing, self.encoders * self.forward / self.encode) if self.encode else self.flowing


def run_cell(cell: Cell, photos: Sequence[bytes], run: LocalStackRun | None, base: Settings) -> Measured:
    log = ForwardLog()
    settings = run.settings if run else base
    engine = standin_engine(cell.profile, log=log, postprocess="host" if cell.today else "graph",
                            settings=settings.replace(tile_size=TODAY_TILE) if cell.today else settings)
    encodes = timed_encodes(engine)
    with todays_encoders(cell.today):
        if run is None:
            encoders = ENGINE_LOOP_ENCODERS
            drain_with_engine_pipeline(engine, photos, fmt=cell.fmt, encoders=encoders)
        else:
            run.submit(photos, fmt=cell.fmt, scale=largest_scale(cell.size, cell.fmt),
                       tag=f"{cell.profile}-{cell.size}-{cell.fmt}-{int(cell.today)}")
            encoders = drain_with_worker(run, engine, serial=cell.today,
                                         encode_workers=PROFILES[cell.profile].host_vcpus - 1)
            run.clear_outputs()
    busy, period, images = log.image_periods()
    if images != len(photos) or len(encodes) != len(photos):
        raise RuntimeError(f"{images} of {len(photos)} images reached the GPU stand-in, {len(encodes)} were encoded")
    forward = sum(span[2] for span in log.spans) / images
    return Measured(busy, period, forward, float(np.mean(encodes)), encoders)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="*", default=["a10g", "l4", "h100"], choices=list(PROFILES))
    parser.add_argument("--sizes", nargs="*", default=["1", "4", "12"], choices=list(SIZES))
    parser.add_argument("--formats", nargs="*", default=["jpeg", "png", "webp", "avif"])
    parser.add_argument("--today", action="store_true", help="also run today's design, side by side")
    parser.add_argument("--loop", choices=["worker", "engine"], default="worker")
    parser.add_argument("--target-seconds", type=float, default=12.0, help="modelled GPU seconds per cell")
    parser.add_argument("--images", type=int, default=0, help="images per cell (default: from --target-seconds)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the worker's per-image INFO lines
    began = time.perf_counter()
    base = Settings()
    photos: dict[str, list[bytes]] = {}
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(LocalStackRun()) if args.loop == "worker" else None
        print(f"# loop: {args.loop}; model {MODEL}; host: {os.cpu_count()} CPUs here; "
              + "; ".join(f"{p.name}: {p.gpu}, {p.instance}, {p.host_vcpus} vCPUs, {p.x4plus_mps:.2f} MP/s"
                          for p in (PROFILES[name] for name in args.profiles)), flush=True)
        for profile in args.profiles:
            for size in args.sizes:
                n = args.images or images_for(profile, size, args.target_seconds, base)
                if len(photos.get(size, [])) < n:
                    photos[size] = [photo(*SIZES[size], seed) for seed in range(n)]
                for fmt in args.formats:
                    scale = largest_scale(size, fmt)
                    line = f"gpu_busy {profile} {size}MP {fmt}{'' if scale == 4 else f'@{scale:g}x'}"
                    notes = []
                    for today in ([False, True] if args.today else [False]):
                        found = run_cell(Cell(profile, size, fmt, today, n), photos[size][:n], run, base)
                        period = max(found.period, found.forward / found.busy)
                        line += f"{' today' if today else ''} {found.busy * 100:.1f} {period:.2f}"
                        notes.append(f"{'today' if today else 'new'}: forward {found.forward:.2f} s, encode "
                                     f"{found.encode:.2f} s/image, flowing {found.flowing * 100:.1f}%")
                    print(line, f"  # {n} images; " + "; ".join(notes), flush=True)
    print(f"# {time.perf_counter() - began:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
