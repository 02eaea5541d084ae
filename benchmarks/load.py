"""Load test of the whole local pipeline (not a test): N uploads at once -> N terminal notifications.

    .venv/bin/python benchmarks/load.py [--n 100] [--sequential 10] [--workers 2] [--model animevideov3]

Phase 1 sends `--sequential` uploads one at a time: end-to-end latency minus inference (the
notification's durations.inference) is the pipeline's own overhead per job, broken down by stage.
Phase 2 uploads `--n` at once: checks that none is lost or duplicated and the DLQ is empty, and prints
throughput, end-to-end latency (dominated by waiting for the 2 workers) and the worker-slot time
each job costs beyond inference.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

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
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def iso(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def line(label: str, values: list[float], note: str = "") -> None:
    print(f"  {label:<34} p50 {pct(values, .5):6.2f}s   p95 {pct(values, .95):6.2f}s   {note}")


class Bench:
    def __init__(self, stack: LocalStack, receiver: WebhookReceiver, model: str, size: tuple[int, int]) -> None:
        assert stack.settings is not None
        self.stack, self.receiver, self.model, self.size = stack, receiver, model, size
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


def sequential_phase(bench: Bench, count: int) -> None:
    store = JobStore(dynamodb_client=aws.client("dynamodb", bench.settings), table_name=bench.settings.jobs_table)
    rows: dict[str, list[float]] = {k: [] for k in ("e2e", "inf", "over", "intake", "start", "worker", "deliver")}
    for i in range(count):
        key = bench.upload(f"seq/{i:04d}.jpg", 10_000 + i)
        [n] = bench.wait([key], timeout=120)
        p, up = n.payload, bench.uploaded_at[key]
        d = p["durations"]
        record = store.get(p["job_id"])
        attrs: dict[str, Any] = dict(record.attributes) if record else {}
        job = bench.stack.jobs.find(p["job_id"]) if bench.stack.jobs else None
        inference = d.get("inference") or 0.0
        rows["e2e"].append(n.received_at - up)
        rows["inf"].append(inference)
        rows["over"].append(n.received_at - up - inference)
        rows["intake"].append(iso(attrs["submitted_at"]) - up)
        if job is not None:
            rows["start"].append(iso(attrs["running_at"]) - iso(attrs["submitted_at"]))
        rows["worker"].append((d.get("total") or 0.0) - inference - (d.get("queued") or 0.0))
        rows["deliver"].append(n.received_at - iso(p["occurred_at"]))
    print(f"\nphase 1: {count} uploads one at a time ({bench.model}, {bench.size[0]}x{bench.size[1]} JPEG)")
    line("end-to-end latency", rows["e2e"])
    line("inference", rows["inf"])
    line("PIPELINE OVERHEAD PER JOB", rows["over"], "(end-to-end - inference)")
    line("upload -> job submitted", rows["intake"], "S3 event, SQS, event source, intake Lambda")
    line("submitted -> job RUNNING", rows["start"], "job queue, worker process start, claim")
    line("worker, all but inference", rows["worker"], "download, model load, encode, upload, record, publish")
    line("notification -> webhook received", rows["deliver"], "SNS, subscription queue, signed POST")


def burst_phase(bench: Bench, n: int, workers: int, timeout: float) -> bool:
    began = time.time()
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda i: bench.upload(f"burst/{i:05d}.jpg", i), range(n)))
    uploads_done = time.time()
    notes = bench.wait(keys, timeout)
    time.sleep(2.0)  # a duplicate would arrive by now
    notes = [x for x in bench.receiver.notifications if x.payload["input"]["key"] in set(keys)]
    got = [x.payload["input"]["key"] for x in notes]
    lost, dupes = n - len(set(got)), len(got) - len(set(got))
    dlq = bench.stack.dlq_depth()
    finished = max((x.received_at for x in notes), default=time.time())
    wall = finished - began
    latency = [x.received_at - bench.uploaded_at[x.payload["input"]["key"]] for x in notes]
    inference = [x.payload["durations"].get("inference") or 0.0 for x in notes]
    by_type: dict[str, int] = {}
    for x in notes:
        by_type[x.payload["event_type"]] = by_type.get(x.payload["event_type"], 0) + 1
    print(f"\nphase 2: {n} uploads at once ({uploads_done - began:.1f}s to upload), {workers} workers")
    print(f"  terminal notifications             {len(notes)} {by_type}   lost {lost}   duplicated {dupes}   "
          f"DLQ {dlq}")
    print(f"  throughput                         {len(notes) / wall:.2f} jobs/s "
          f"({wall:.1f}s from first upload to last webhook)")
    if latency:
        line("end-to-end latency", latency, "(mostly waiting for a free worker)")
        slot = wall * workers / len(notes) - statistics.mean(inference)
        print(f"  worker-slot time beyond inference  {slot:.2f}s per job "
              f"(wall x workers / jobs - mean inference {statistics.mean(inference):.2f}s)")
    return lost == 0 and dupes == 0 and dlq == 0 and by_type.get("upscale.succeeded", 0) == n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="uploads at once (phase 2)")
    parser.add_argument("--sequential", type=int, default=10, help="uploads one at a time (phase 1)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="animevideov3")
    parser.add_argument("--size", default="48x32", help="input WxH")
    parser.add_argument("--batch-window", type=float, default=0.0,
                        help="intake batching window, seconds (the deployed stack's is in cdk.json; with light "
                             "traffic every upload waits for it)")
    parser.add_argument("--worker-start", choices=("prefork", "spawn"), default="prefork")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--logs", type=Path, default=Path("out/load-logs.txt"))
    args = parser.parse_args()
    size = (int(args.size.split("x")[0]), int(args.size.split("x")[1]))

    from gpu_batch.engine.models import ensure_model

    ensure_model(args.model)
    args.logs.parent.mkdir(parents=True, exist_ok=True)
    receiver = WebhookReceiver().start()
    config = LocalStackConfig(workers=args.workers, webhooks=(receiver.url,), worker_start=args.worker_start,
                              mapping=MappingConfig(batch_size=10, batching_window_seconds=args.batch_window,
                                                    pollers=2))
    try:
        with args.logs.open("w") as log, LocalStack(dataclasses.replace(config, log_stream=log)) as stack:
            assert stack.webhook_subscriptions[0].confirmed.wait(10)
            bench = Bench(stack, receiver, args.model, size)
            if args.sequential:
                sequential_phase(bench, args.sequential)
            ok = burst_phase(bench, args.n, args.workers, args.timeout) if args.n else True
    finally:
        receiver.stop()
    print("\nOK: none lost, none duplicated, DLQ empty" if ok else "\nFAILED: lost/duplicated/failed jobs or DLQ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
