"""`upscaler demo`: the main job end to end on this machine, with a before/after picture and timings."""

from __future__ import annotations

import io
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from rich.console import Console
from rich.json import JSON
from rich.table import Table

from common import aws
from common.jobs import JobStore, upload_job_id
from local_stack.event_source import MappingConfig
from local_stack.receiver import WebhookReceiver
from local_stack.stack import LocalStack, LocalStackConfig

SAMPLE_WIDTH = 256  # x4plus on these 2 cores: 256x171 takes ~25 s (quiet) to ~75 s (busy machine)
SAMPLE_JPEG_QUALITY = 40  # visible blocking and ringing for the GAN to clean up


def sample_photo(width: int = SAMPLE_WIDTH) -> bytes:
    """scikit-image's `coffee`, shrunk and saved as a poor JPEG: what people upload from old phones."""
    try:
        from skimage import data
    except ImportError as exc:  # a dev extra: `pip install -e '.[dev]'`, or pass your own IMAGE
        raise SystemExit("the sample photo needs scikit-image (pip install scikit-image), or pass IMAGE") from exc

    photo = Image.fromarray(data.coffee())
    height = round(photo.height * width / photo.width)
    buf = io.BytesIO()
    photo.resize((width, height), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=SAMPLE_JPEG_QUALITY)
    return buf.getvalue()


def side_by_side(before: bytes, after: bytes) -> Image.Image:
    """Left: the input enlarged with bicubic interpolation; right: the model's output; same size."""
    out = Image.open(io.BytesIO(after)).convert("RGB")
    bicubic = Image.open(io.BytesIO(before)).convert("RGB").resize(out.size, Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (out.width * 2 + 8, out.height + 28), "white")
    canvas.paste(bicubic, (0, 28))
    canvas.paste(out, (out.width + 8, 28))
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 8), "input, bicubic", fill="black")
    draw.text((out.width + 14, 8), "Real-ESRGAN", fill="black")
    return canvas


def _stamp(record_attrs: dict[str, Any], name: str) -> float | None:
    raw = record_attrs.get(name)
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() if raw else None


def _received(receiver: WebhookReceiver, job_id: str, key: str) -> list[Any]:
    return [n for n in receiver.notifications
            if n.payload.get("job_id") == job_id or (n.payload.get("input") or {}).get("key") == key]


def run_demo(*, image: Path | None, model: str | None, out_dir: Path, width: int | None = None,
             timeout: float = 600.0) -> int:
    from gpu_batch.engine.models import ensure_model

    console = Console()
    began = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    with console.status("Preparing the model (converted to ONNX once, then cached)..."):
        t = time.monotonic()
        from common.settings import Settings

        model_name = model or Settings.from_env().default_model
        model_path = ensure_model(model_name)
        timings["model ready"] = time.monotonic() - t
    console.print(f"[green]✓[/] model [bold]{model_name}[/] at {model_path}")

    data = image.read_bytes() if image else sample_photo(width or SAMPLE_WIDTH)
    name = image.name if image else "coffee.jpg"
    (out_dir / f"input-{name}").write_bytes(data)
    with Image.open(io.BytesIO(data)) as probe:
        console.print(f"[green]✓[/] input {name}: {probe.width}x{probe.height} {probe.format}, {len(data):,} bytes")

    receiver = WebhookReceiver().start()
    log_path = out_dir / "demo-logs.txt"
    with log_path.open("w") as log, console.status("Starting the local stack (moto, intake, worker queue)..."):
        t = time.monotonic()
        # One photo, nothing to batch: no batching window (the deployed stack waits up to 5 s to fill batches).
        stack = LocalStack(LocalStackConfig(workers=1, webhooks=(receiver.url,), log_stream=log,
                                            mapping=MappingConfig(batching_window_seconds=0.0, pollers=1)))
        try:
            stack.start()
            timings["stack start"] = time.monotonic() - t
            return _run(console, stack, receiver, data, name, model, out_dir, timings, began, timeout, log_path)
        finally:
            stack.stop()
            receiver.stop()


def _run(console: Console, stack: LocalStack, receiver: WebhookReceiver, data: bytes, name: str,
         model: str | None, out_dir: Path, timings: dict[str, float], began: float, timeout: float,
         log_path: Path) -> int:
    settings = stack.settings
    assert settings is not None
    console.print(f"[green]✓[/] local stack at {settings.endpoint_url} ({timings['stack start']:.1f}s), "
                  f"webhook {receiver.url}")
    s3 = aws.client("s3", settings)
    key = f"{settings.upload_prefix}{int(time.time())}-{name}"
    metadata = {"model": model} if model else {}
    uploaded_at = time.time()
    put = s3.put_object(Bucket=settings.input_bucket, Key=key, Body=data, Metadata=metadata)
    job_id = upload_job_id(settings.input_bucket, key, put.get("VersionId"), put.get("ETag"), len(data))
    console.print(f"[green]✓[/] uploaded s3://{settings.input_bucket}/{key} (job {job_id[:12]}...)")

    store = JobStore(dynamodb_client=aws.client("dynamodb", settings), table_name=settings.jobs_table)
    deadline = time.monotonic() + timeout
    state = "waiting for intake"
    with console.status("") as status:
        while not _received(receiver, job_id, key):
            record = store.get(job_id)
            if record is not None:
                state = str(record.state)
            status.update(f"[bold]{state}[/] {time.time() - uploaded_at:5.1f}s  (worker logs: {log_path})")
            if time.monotonic() > deadline:
                console.print(f"[red]✗ no webhook after {timeout:.0f}s; job state {state}[/]")
                return 1
            time.sleep(0.25)
    received = _received(receiver, job_id, key)[0]
    payload = received.payload
    timings["upload -> webhook"] = received.received_at - uploaded_at

    console.rule(f"webhook: {payload['event_type']}")
    console.print(f"headers: x-amz-sns-message-type={received.headers.get('x-amz-sns-message-type')}, "
                  f"subscription {received.headers.get('x-amz-sns-subscription-arn')} (signature verified)")
    console.print(JSON(json.dumps(payload)))
    if payload["event_type"] != "upscale.succeeded":
        console.print(f"[red]✗ {payload['event_type']}: {payload.get('error')}[/]")
        return 1

    output = payload["output"]
    result = aws.client("s3", settings).get_object(Bucket=output["bucket"], Key=output["key"])["Body"].read()
    result_path = out_dir / Path(output["key"]).name
    result_path.write_bytes(result)
    comparison = out_dir / f"{Path(name).stem}-before-after.png"
    side_by_side(data, result).save(comparison)

    record = store.get(payload["job_id"])
    attrs = dict(record.attributes) if record else {}
    accepted, running = _stamp(attrs, "accepted_at"), _stamp(attrs, "running_at")
    durations = payload.get("durations") or {}
    table = Table(title="timings (seconds)")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    rows: list[tuple[str, float | None]] = [
        ("model ready (ensure_model)", timings["model ready"]),
        ("local stack start", timings["stack start"]),
        ("upload -> job accepted (S3 event, SQS, intake Lambda)", accepted - uploaded_at if accepted else None),
        ("accepted -> worker running (work queue, Batch placement, worker start)",
         running - accepted if running and accepted else None),
        ("worker: download", durations.get("download")),
        ("worker: inference", durations.get("inference")),
        ("worker: upload", durations.get("upload")),
        ("upload -> webhook received (end to end)", timings["upload -> webhook"]),
        ("demo total", time.monotonic() - began),
    ]
    for label, value in rows:
        table.add_row(label, "-" if value is None else f"{value:.2f}")
    console.print(table)
    console.print(f"[green]✓[/] {output['width']}x{output['height']} result: {result_path}")
    console.print(f"[green]✓[/] before/after: {comparison}")
    return 0
