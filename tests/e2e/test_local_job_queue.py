"""The local Batch stand-in: retries per the job definition, FAILED events, kills; with a fake worker."""

from __future__ import annotations

import io
import signal
import sys
import threading
from typing import Any

import pytest

from common import aws
from common.contract import ENV_JOB_ID, EXIT_RETRYABLE, JobParameters
from common.submit import LocalQueueJobSubmitter
from local_stack.batch_events import exit_code_of
from local_stack.job_queue import LocalJobQueue
from local_stack.resources import create_queue

# Exit codes per attempt come from the input key, e.g. "plan/75,0"; "sleep" sleeps until killed.
FAKE_WORKER = r"""
import os, sys, time
attempt = int(os.environ["AWS_BATCH_JOB_ATTEMPT"])
print("attempt", attempt, "job", os.environ["UPSCALER_JOB_ID"], "table", os.environ["UPSCALER_JOBS_TABLE"])
plan = os.environ["UPSCALER_JOB_INPUT_KEY"].split("/", 1)[1]
if plan == "sleep":
    time.sleep(60)
codes = [int(c) for c in plan.split(",")]
sys.exit(codes[min(attempt, len(codes)) - 1])
"""


class Harness:
    def __init__(self, settings: Any, workers: int) -> None:
        sqs = aws.client("sqs", settings)
        url, _ = create_queue(sqs, f"{settings.app_name}-jobs-{threading.get_ident()}-{id(self)}")
        self.settings = settings.replace(job_attempts=3, job_backend="local", local_job_queue_url=url)
        self.events: list[dict[str, Any]] = []
        self.log = io.StringIO()
        self.queue = LocalJobQueue(
            sqs=sqs, queue_url=url, settings=self.settings, base_env=self.settings.to_env(), workers=workers,
            on_failed=self.events.append, log_stream=self.log, command=[sys.executable, "-c", FAKE_WORKER],
        )
        self.submitter = LocalQueueJobSubmitter(sqs_client=sqs, queue_url=url)

    def submit(self, job_id: str, plan: str) -> None:
        self.submitter.submit(JobParameters(job_id=job_id, input_bucket="in", input_key=f"plan/{plan}",
                                            output_bucket="out", output_key=f"o/{job_id}.png"))

    def finished(self, job_id: str) -> bool:
        job = self.queue.find(job_id)
        return job is not None and job.status in ("SUCCEEDED", "FAILED") and job.finished_at is not None


@pytest.fixture()
def harness(emulator_settings: Any) -> Any:
    made: list[Harness] = []

    def make(workers: int = 2) -> Harness:
        h = Harness(emulator_settings, workers)
        h.queue.start()
        made.append(h)
        return h

    yield make
    for h in made:
        h.queue.stop()


def test_exit_codes_map_like_containers() -> None:
    assert exit_code_of(0) == 0
    assert exit_code_of(75) == 75
    assert exit_code_of(-signal.SIGKILL) == 137


def test_retryable_exit_is_retried_then_succeeds(harness: Any, wait: Any) -> None:
    h = harness()
    h.submit("job-retry", f"{EXIT_RETRYABLE},0")
    wait(lambda: h.finished("job-retry"), timeout=30, what="job-retry to finish")
    job = h.queue.find("job-retry")
    assert job.status == "SUCCEEDED"
    assert [a.exit_code for a in job.attempts] == [EXIT_RETRYABLE, 0]
    assert h.events == []
    logs = h.log.getvalue()
    # Each attempt saw its attempt number, the job's environment and the settings; logs are prefixed.
    assert f"[worker job-retr#1] attempt 1 job job-retry table {h.settings.jobs_table}" in logs
    assert "[worker job-retr#2] attempt 2 job job-retry" in logs


def test_retries_exhausted_and_crashes_emit_one_failed_event(harness: Any, wait: Any) -> None:
    h = harness()
    h.submit("job-exhausted", f"{EXIT_RETRYABLE}")
    h.submit("job-crash", "1")
    wait(lambda: h.finished("job-exhausted") and h.finished("job-crash"), timeout=40, what="both jobs")
    assert len(h.events) == 2
    exhausted = h.events[[_job_id(e) for e in h.events].index("job-exhausted")]
    crash = h.events[[_job_id(e) for e in h.events].index("job-crash")]
    assert exhausted["detail-type"] == "Batch Job State Change" and exhausted["source"] == "aws.batch"
    assert exhausted["detail"]["status"] == "FAILED"
    assert exhausted["detail"]["container"]["exitCode"] == EXIT_RETRYABLE
    assert len(exhausted["detail"]["attempts"]) == 3  # job_attempts
    assert exhausted["detail"]["jobName"] == "upscale-job-exhausted"
    assert crash["detail"]["container"]["exitCode"] == 1
    assert len(crash["detail"]["attempts"]) == 1  # only EXIT_RETRYABLE is retried


def test_killed_worker_fails_with_137_and_workers_run_in_parallel(harness: Any, wait: Any) -> None:
    h = harness(workers=2)
    h.submit("job-a", "sleep")
    h.submit("job-b", "sleep")
    wait(lambda: len(h.queue.running()) == 2, timeout=20, what="two workers running at once")
    assert h.queue.kill("job-a")
    wait(lambda: h.finished("job-a"), timeout=20, what="the killed job")
    assert len(h.events) == 1
    detail = h.events[0]["detail"]
    assert _job_id(h.events[0]) == "job-a"
    assert detail["container"]["exitCode"] == 137
    assert detail["container"]["reason"] == "killed by signal 9"
    assert h.queue.find("job-b").status == "RUNNING"


def _job_id(event: dict[str, Any]) -> str:
    env = {e["name"]: e["value"] for e in event["detail"]["container"]["environment"]}
    return env[ENV_JOB_ID]
