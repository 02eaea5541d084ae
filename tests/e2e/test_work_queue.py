"""The work-queue design end to end on the local stack: workers that die, crash on one image, or are told to
stop (spot reclaim) lose nothing and never make a second notification. Short leases so failures heal fast."""

from __future__ import annotations

import io
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from common import aws
from common.contract import JobState
from common.jobs import JobStore, upload_job_id
from local_stack.batch import LocalBatchJob
from local_stack.receiver import WebhookReceiver
from local_stack.stack import LocalStack, LocalStackConfig, queue_depth

pytestmark = pytest.mark.slow

SUPPORT = Path(__file__).resolve().parent.parent / "support"
sys.path.insert(0, str(SUPPORT))
from crashing_worker import CRASH_MARKER  # noqa: E402

FAST = {"model": "animevideov3"}


@pytest.fixture(scope="module")
def stack(receiver: WebhookReceiver, quick: dict[str, Any]) -> Iterator[LocalStack]:
    from gpu_batch.engine.models import ensure_model

    ensure_model("animevideov3")
    config = LocalStackConfig(
        workers=2, webhooks=(receiver.url,), scaler_interval_seconds=1.0,
        worker_command=(sys.executable, str(SUPPORT / "crashing_worker.py")),
        settings_overrides={"work_visibility_seconds": 6, "worker_idle_seconds": 4, "max_attempts": 3},
        **quick,
    )
    with LocalStack(config) as running:
        assert running.webhook_subscriptions[0].confirmed.wait(10), "webhook not confirmed"
        yield running


def _png(size: tuple[int, int], seed: int, text: bytes = b"") -> bytes:
    img = Image.new("RGB", size)
    img.putdata([((x * 7 + seed) % 256, (y * 5) % 256, (x + y + seed) % 256)
                 for y in range(size[1]) for x in range(size[0])])
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("Comment", text.decode())
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _upload(stack: LocalStack, name: str, body: bytes) -> str:
    s = stack.settings
    assert s is not None
    key = f"{s.upload_prefix}{name}"
    put = aws.client("s3", s).put_object(Bucket=s.input_bucket, Key=key, Body=body, Metadata=FAST)
    return upload_job_id(s.input_bucket, key, put.get("VersionId"), put.get("ETag"), len(body))


def _store(stack: LocalStack) -> JobStore:
    assert stack.settings is not None
    return JobStore(dynamodb_client=aws.client("dynamodb", stack.settings), table_name=stack.settings.jobs_table)


def _all_notified(stack: LocalStack, receiver: WebhookReceiver, job_ids: list[str], wait: Any,
                  timeout: float) -> dict[str, Any]:
    """Every job's notifications, once each has one and the work queue is empty (nothing left that could
    make a second one)."""
    wait(lambda: all(receiver.for_job(j) for j in job_ids), timeout=timeout, what="every upload's notification")
    assert stack.resources is not None and stack.settings is not None
    wait(lambda: queue_depth(aws.client("sqs", stack.settings), stack.resources.work_queue_url) == 0,
         timeout=60, what="the work queue to drain")
    return {j: [r.payload for r in receiver.for_job(j)] for j in job_ids}


def _busy_worker(stack: LocalStack, wait: Any) -> tuple[LocalBatchJob, str]:
    """A worker that holds a RUNNING job right now, and that job's id."""
    assert stack.settings is not None and stack.batch is not None

    def busy() -> tuple[LocalBatchJob, str] | None:
        items = aws.client("dynamodb", stack.settings).scan(
            TableName=stack.settings.jobs_table, FilterExpression="#s = :r",
            ExpressionAttributeNames={"#s": "state"}, ExpressionAttributeValues={":r": {"S": "RUNNING"}})["Items"]
        for item in items:
            holder = item.get("worker", {}).get("M", {}).get("batch_job_id", {}).get("S")
            job = stack.batch.jobs.get(holder or "")
            if job is not None and job in stack.batch.running():
                return job, item["job_id"]["S"]
        return None
    return wait(busy, timeout=90, interval=0.05, what="a worker busy with an image")


def test_a_worker_killed_mid_burst_loses_nothing_and_says_nothing_twice(stack: LocalStack,
                                                                         receiver: WebhookReceiver, wait: Any) -> None:
    jobs = [_upload(stack, f"killed-burst/{i}.png", _png((96, 96), i)) for i in range(8)]
    victim, held = _busy_worker(stack, wait)
    assert held in jobs
    assert stack.batch.signal(victim, signal.SIGKILL)  # the OOM killer, or a lost host
    notes = _all_notified(stack, receiver, jobs, wait, timeout=180)
    assert {j: [n["event_type"] for n in ns] for j, ns in notes.items()} == \
        {j: ["upscale.succeeded"] for j in jobs}
    assert all(_store(stack).get(j).state is JobState.SUCCEEDED for j in jobs)
    assert stack.dlq_depth(work=True) == 0 and stack.dlq_depth() == 0


def test_an_image_that_kills_every_worker_fails_alone_after_max_attempts(stack: LocalStack,
                                                                          receiver: WebhookReceiver,
                                                                          wait: Any) -> None:
    killer = _upload(stack, "crash-burst/killer.png", _png((32, 32), 99, CRASH_MARKER))
    others = [_upload(stack, f"crash-burst/{i}.png", _png((48, 48), i)) for i in range(5)]
    notes = _all_notified(stack, receiver, [killer, *others], wait, timeout=240)
    (failure,) = notes[killer]
    assert (failure["event_type"], failure["error"]["code"]) == ("upscale.failed", "WORKER_CRASHED")
    # Counted on the record, not by SQS receives: exactly max_attempts real attempts, whatever the machine's load
    assert _store(stack).get(killer).number("crashes") == stack.settings.max_attempts
    assert all([n["event_type"] for n in notes[j]] == ["upscale.succeeded"] for j in others)


def test_sigterm_to_a_busy_worker_gives_the_item_back_and_exits_within_the_notice(
        stack: LocalStack, receiver: WebhookReceiver, wait: Any) -> None:
    jobs = [_upload(stack, f"spot/{i}.png", _png((128, 128), i)) for i in range(4)]
    victim, held = _busy_worker(stack, wait)
    assert held in jobs
    signalled = time.time()
    assert stack.batch.signal(victim, signal.SIGTERM)  # spot reclaim: two minutes' notice
    wait(lambda: victim.stopped_at is not None, timeout=60, what="the worker to exit")
    assert victim.stopped_at is not None and victim.stopped_at - signalled < 100  # within the 110 s stop timeout
    summary = victim.summary
    assert victim.exit_code == 0 and summary.get("reason") == "stop signal"
    assert summary["released"] + summary["done"] >= 1  # the image in hand: given back, or finished
    notes = _all_notified(stack, receiver, jobs, wait, timeout=180)
    assert {j: [n["event_type"] for n in ns] for j, ns in notes.items()} == {j: ["upscale.succeeded"] for j in jobs}
