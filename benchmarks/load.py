"""Load test of the whole local pipeline (a benchmark, not a test): workers that drain the work queue.

    .venv/bin/python benchmarks/load.py [--n 200] [--workers 2] [--batch-delay 10] [--model animevideov3]

Phase 1, one upload on an idle stack: end to end = Batch's placement delay + worker start + inference
+ the rest, and the rest should stay under a second.
Phase 2, `--n` uploads at once: how many Batch jobs (workers) were started and how many model loads they
made, that every upload got exactly one terminal notification, both DLQs empty, and the pipeline
overhead per image outside inference, read from the workers' "job succeeded" log lines: the worker's
own time on an image beyond inference (claim beside download, upload), and apart from it the terminal
step (presign, terminal write, publish), which runs beside the next image's inference.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from PIL import Image

from common import aws
from common.jobs import JobStore
from local_stack.event_source import MappingConfig
from local_stack.receiver import ReceivedNotification, WebhookReceiver
from local_stack.stack import LocalStack, LocalStackConfig


def photo(i: int, size: tuple[int, int]) -> bytes:
    img = Image.new("RGB", size)
    img.putdata([((x * 9 + i) % 256, (y * 7 + 3 * i) % 256, (x * y + i) % 256)
                 for y in range(size[1]) for x in range(size[0])])
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=60)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def iso(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def row(label: str, value: str, goal: str = "") -> None:
    print(f"| {label} | {value} | {goal} |")


class Bench:
    def __init__(self, stack: LocalStack, receiver: WebhookReceiver, model: str, size: tuple[int, int],
                 logs: Path) -> None:
        assert stack.settings is not None
        self.stack, self.receiver, self.model, self.size, self.logs = stack, receiver, model, size, logs
        self.settings = stack.settings
        self.s3 = aws.client("s3", self.settings)
        self.uploaded_at: dict[str, float] = {}

    def upload(self, name: str, i: int) -> str:
        key = f"{self.settings.upload_prefix}{name}"
        body = photo(i, self.size)
        self.uploaded_at[key] = time.time()
        self.s3.put_object(Bucket=self.settings.input_bucket, Key=key, Body=body, Metadata={"model": self.model})
        return key

    def wait(self, keys: list[str], timeout: float) -> list[ReceivedNotification]:
        wanted = set(keys)
        try:
            self.receiver.wait_for(lambda p: p["input"]["key"] in wanted, count=len(keys), timeout=timeout)
        except TimeoutError as exc:
            print(f"LOST: {exc}", file=sys.stderr)
        return [n for n in self.receiver.notifications if n.payload["input"]["key"] in wanted]

    def worker_lines(self, message: str) -> list[dict]:
        found = []
        for text in self.logs.read_text().splitlines():
            _, _, body = text.partition("] ")
            if body.startswith("{") and f'"message":"{message}"' in body:
                found.append(json.loads(body))
        return found


def idle_phase(bench: Bench, delay: float) -> None:
    key = bench.upload("idle/one.jpg", 1)
    [n] = bench.wait([key], timeout=300)
    e2e = n.received_at - bench.uploaded_at[key]
    job = min(bench.stack.batch.started(), key=lambda j: j.created_at)  # the worker this upload started
    store = JobStore(dynamodb_client=aws.client("dynamodb", bench.settings), table_name=bench.settings.jobs_table)
    record = store.get(n.payload["job_id"])
    assert record is not None and job.started_at is not None
    worker_start = iso(str(record.attributes["running_at"])) - job.started_at
    inference = n.payload["durations"]["inference"] or 0.0
    rest = e2e - delay - worker_start - inference
    print(f"\nPhase 1: one upload on an idle stack ({bench.model}, {bench.size[0]}x{bench.size[1]} JPEG, "
          f"--batch-delay {delay:g})\n")
    print("| what | seconds | goal |\n|---|---|---|")
    row("end to end (upload -> webhook)", f"{e2e:.2f}")
    row("batch placement delay", f"{delay:.2f}")
    row("worker start (process, imports, clients, until its first claim)", f"{worker_start:.2f}")
    row("inference", f"{inference:.2f}")
    row("**the rest** (S3 event, intake, queue, claim, I/O, record, publish, webhook)", f"**{rest:.2f}**", "< 1 s")


def burst_phase(bench: Bench, n: int, workers: int, timeout: float) -> bool:
    before_jobs = len(bench.stack.batch.jobs)
    before_items = len(bench.worker_lines("job succeeded"))
    began = time.time()
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda i: bench.upload(f"burst/{i:05d}.jpg", i), range(n)))
    notes = bench.wait(keys, timeout)
    wall = max((x.received_at for x in notes), default=time.time()) - began
    _wait_idle(bench)  # every worker exits idle: its summary line is in the log
    got = [x.payload["input"]["key"] for x in notes]
    lost, dupes = n - len(set(got)), len(got) - len(set(got))
    dlq, work_dlq = bench.stack.dlq_depth(), bench.stack.dlq_depth(work=True)
    jobs = list(bench.stack.batch.jobs.values())[before_jobs:]
    model_loads = sum(len(j.summary.get("models_loaded") or []) for j in jobs)
    succeeded = bench.worker_lines("job succeeded")[before_items:]
    overhead = [d["item"] - d["inference"] for d in (s["durations"] for s in succeeded)]
    finish = [d["finish"] for d in (s["durations"] for s in succeeded)]
    latency = [x.received_at - bench.uploaded_at[x.payload["input"]["key"]] for x in notes]
    ok_events = sum(1 for x in notes if x.payload["event_type"] == "upscale.succeeded")
    print(f"\nPhase 2: {n} uploads at once, max_workers {workers}\n")
    print("| what | measured | goal |\n|---|---|---|")
    row("Batch jobs (workers) started", str(len(jobs)), "<= 4")
    row("model loads", str(model_loads), f"<= jobs started ({len(jobs)})")
    row("terminal notifications", f"{len(notes)} ({ok_events} succeeded), lost {lost}, duplicated {dupes}",
        f"{n}, each exactly once")
    row("DLQs (intake, work)", f"{dlq}, {work_dlq}", "0, 0")
    row("**pipeline overhead outside inference per image, p50 / p95** (claim beside download, upload)",
        f"**{pct(overhead, .5):.3f} s** / {pct(overhead, .95):.3f} s", "p50 <= 0.1 s")
    row("terminal step per image, p50 / p95 (beside the next image's inference)",
        f"{pct(finish, .5):.3f} s / {pct(finish, .95):.3f} s")
    row("throughput", f"{len(notes) / wall:.2f} images/s ({wall:.1f} s first upload to last webhook)")
    row("end to end latency p50 / p95", f"{pct(latency, .5):.1f} s / {pct(latency, .95):.1f} s")
    return (lost == 0 and dupes == 0 and dlq == 0 and work_dlq == 0 and ok_events == n
            and len(jobs) <= 4 and model_loads <= len(jobs))


def _wait_idle(bench: Bench, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while bench.stack.batch.running() and time.time() < deadline:
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="uploads at once (phase 2)")
    parser.add_argument("--workers", type=int, default=2, help="max_workers")
    parser.add_argument("--batch-delay", type=float, default=10.0, help="Batch placement delay per worker job")
    parser.add_argument("--idle-seconds", type=int, default=5, help="worker_idle_seconds")
    parser.add_argument("--model", default="animevideov3")
    parser.add_argument("--size", default="48x32", help="input WxH")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--logs", type=Path, default=Path("out/load-logs.txt"))
    args = parser.parse_args()
    size = (int(args.size.split("x")[0]), int(args.size.split("x")[1]))

    from gpu_batch.engine.models import ensure_model

    ensure_model(args.model)
    args.logs.parent.mkdir(parents=True, exist_ok=True)
    receiver = WebhookReceiver().start()
    config = LocalStackConfig(workers=args.workers, batch_delay=args.batch_delay, webhooks=(receiver.url,),
                              settings_overrides={"worker_idle_seconds": args.idle_seconds},
                              mapping=MappingConfig(batch_size=10, batching_window_seconds=0.0, pollers=2))
    try:
        with args.logs.open("w") as log, LocalStack(dataclasses.replace(config, log_stream=log)) as stack:
            assert stack.webhook_subscriptions[0].confirmed.wait(10)
            bench = Bench(stack, receiver, args.model, size, args.logs)
            idle_phase(bench, args.batch_delay)
            _wait_idle(bench)
            ok = burst_phase(bench, args.n, args.workers, args.timeout) if args.n else True
    finally:
        receiver.stop()
    print("\nOK" if ok else "\nFAILED: lost/duplicated/failed images, a DLQ not empty, or too many workers")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
