"""Per-job overhead of the Batch worker outside inference, measured against a local moto server.

Runs `python -m gpu_batch.worker` (a fresh process per job, as Batch does) on a small image with
the animevideov3 model, reads the phase timings from the worker's JSON logs, and prints a table:
process start + imports, model load, download, inference, upload, record writes, publish.
A second block runs the same jobs in one warm process (imports and model already loaded) to
separate fixed per-container costs from per-job costs.

    .venv/bin/python benchmarks/worker_overhead.py [--jobs 5] [--size 256] [--model animevideov3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from moto.server import ThreadedMotoServer
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import aws  # noqa: E402
from common.contract import BATCH_ATTEMPT_ENV, WORKER_MODULE, JobOptions, JobParameters, JobState, utc_now_iso  # noqa: E402
from common.jobs import JobStore  # noqa: E402
from common.notify import Notifier  # noqa: E402
from common.settings import Settings  # noqa: E402
from local_stack.resources import create_bucket, create_jobs_table  # noqa: E402

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
PHASES = ("process_start", "setup", "claim", "model_load", "download", "inference", "upload", "record", "publish",
          "exit", "process_total", "overhead")


def photo_like(size: int) -> bytes:
    """A JPEG with gradients and noise (compresses like a photo, unlike a flat test card)."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 / size, y * 255 / size, (x + y) * 127 / size], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=85)
    return out.getvalue()


def setup(endpoint: str) -> tuple[Settings, JobStore, object]:
    os.environ.update(CREDENTIALS)
    settings = Settings.from_env({}, endpoint_url=endpoint, jobs_table="bench-jobs", input_bucket="bench-in",
                                 output_bucket="bench-out")
    s3 = aws.client("s3", settings)
    for bucket in (settings.input_bucket, settings.output_bucket):
        create_bucket(s3, bucket, settings.region)
    create_jobs_table(aws.client("dynamodb", settings), settings.jobs_table)
    topic = aws.client("sns", settings).create_topic(Name="bench-events")["TopicArn"]
    settings = settings.replace(topic_arn=topic)
    return settings, JobStore(dynamodb_client=aws.client("dynamodb", settings), table_name=settings.jobs_table), s3


def new_job(settings: Settings, store: JobStore, s3, job_id: str, data: bytes, model: str) -> JobParameters:
    key = f"uploads/{job_id}.jpg"
    version = s3.put_object(Bucket=settings.input_bucket, Key=key, Body=data).get("VersionId")
    store.create(job_id=job_id, dedupe=job_id, input_bucket=settings.input_bucket, input_key=key)
    store.transition(job_id, JobState.SUBMITTED)
    return JobParameters(job_id=job_id, input_bucket=settings.input_bucket, input_key=key, input_version=version,
                         output_bucket=settings.output_bucket, output_key=f"outputs/{job_id}.jpg",
                         options=JobOptions(model=model, scale=4.0), submitted_at=utc_now_iso())


def run_process(settings: Settings, params: JobParameters) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPSCALER_")}
    env.update({**settings.to_env(), **params.to_environment(), BATCH_ATTEMPT_ENV: "1"})
    spawned = time.time()
    proc = subprocess.run([sys.executable, "-m", WORKER_MODULE], env=env, cwd=REPO, capture_output=True, text=True,
                          check=False)
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"worker exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    logs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    def stamp(entry: dict) -> float:
        return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()

    running = next(e for e in logs if e["message"] == "job running")
    last = next(e for e in logs if e["message"] == "job succeeded")
    done = last["durations"]
    row = {"process_start": stamp(logs[0]) - spawned, "setup": stamp(running) - stamp(logs[0]) - done["claim"],
           "exit": ended - stamp(last), "process_total": ended - spawned, **done}
    row["overhead"] = row["process_total"] - row["inference"]
    return row


def run_warm(settings: Settings, params_list: list[JobParameters]) -> list[dict[str, float]]:
    import logging

    from gpu_batch.engine import Engine
    from gpu_batch.worker.job import Timings, logger, run_job

    logger.setLevel(logging.WARNING)
    engine = Engine(device="auto", settings=settings)
    store = JobStore(dynamodb_client=aws.client("dynamodb", settings), table_name=settings.jobs_table)
    notifier = Notifier(sns_client=aws.client("sns", settings), topic_arn=settings.topic_arn,
                        upload_prefix=settings.upload_prefix)
    rows = []
    captured: list[Timings] = []
    original = Timings.as_record

    def spy(self: Timings) -> dict[str, float]:
        captured.append(self)
        return original(self)

    Timings.as_record = spy  # read the final timings of each run without changing the worker
    try:
        for params in params_list:
            started = time.perf_counter()
            code = run_job(params, settings=settings, engine=engine, s3=aws.client("s3", settings), store=store,
                           notifier=notifier)
            wall = time.perf_counter() - started
            assert code == 0, code
            final = original(captured[-1])
            rows.append({**final, "process_total": wall, "overhead": wall - final["inference"]})
    finally:
        Timings.as_record = original
    return rows


def table(title: str, rows: list[dict[str, float]]) -> str:
    lines = [f"\n{title} ({len(rows)} jobs; seconds)", f"{'phase':<15}{'median':>10}{'min':>10}{'max':>10}"]
    for phase in PHASES:
        values = [r[phase] for r in rows if r.get(phase) is not None]
        if values:
            lines.append(f"{phase:<15}{statistics.median(values):>10.3f}{min(values):>10.3f}{max(values):>10.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--size", type=int, default=256, help="input side in pixels (output is 4x)")
    parser.add_argument("--model", default="animevideov3")
    args = parser.parse_args()

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the emulator's access log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        settings, store, s3 = setup(f"http://{host}:{port}")
        data = photo_like(args.size)
        cold = [run_process(settings, new_job(settings, store, s3, f"cold-{i}", data, args.model))
                for i in range(args.jobs)]
        warm = run_warm(settings, [new_job(settings, store, s3, f"warm-{i}", data, args.model)
                                   for i in range(args.jobs)])
    finally:
        server.stop()
    from gpu_batch.engine import Engine

    provider = Engine(device="auto").provider(args.model)
    print(f"worker overhead: {args.model}, {args.size}x{args.size} JPEG ({len(data) / 1024:.0f} KiB) -> "
          f"{args.size * 4}x{args.size * 4}, provider {provider}, moto server on localhost, {os.cpu_count()} CPUs")
    print(table("one process per job (as on Batch)", cold))
    print(table("warm process (imports and model already loaded)", warm))
    print("\noverhead = process_total - inference (inference = the engine call: decode + network + encode).\n"
          "process_start = spawn until the first log line (interpreter, boto3, onnxruntime imports);\n"
          "setup = building the engine and the AWS clients; claim = the conditional RUNNING write;\n"
          "record = the conditional SUCCEEDED write; publish = presigning + schema check + SNS publish;\n"
          "exit = last log line until the process has exited.")


if __name__ == "__main__":
    main()
