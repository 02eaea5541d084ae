"""The local stand-in for the AWS Batch job queue: runs the real worker as a process per job attempt.

Drains the SQS queue that `common.submit.LocalQueueJobSubmitter` sends to, and gives each worker the
environment Batch would give its container: the settings, the job's environment overrides and
AWS_BATCH_JOB_ATTEMPT. Retries follow the job definition: an attempt that exits EXIT_RETRYABLE is
retried up to `settings.job_attempts`; any other non-zero exit, a timeout, or running out of attempts
makes the job FAILED, and the "Batch Job State Change" FAILED event goes to `on_failed` (in AWS:
EventBridge -> notifier Lambda).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from common.contract import BATCH_ATTEMPT_ENV, ENV_JOB_ID, EXIT_OK, EXIT_RETRYABLE
from common.settings import Settings
from local_stack.batch_events import AttemptRecord, batch_job_failed_event, exit_code_of
from local_stack.worker_launch import SpawnLauncher, WorkerHandle, WorkerLauncher, signal_worker

log = logging.getLogger(__name__)

TIMEOUT_REASON = "Job attempt duration exceeded timeout"


@dataclass
class LocalBatchJob:
    batch_job_id: str
    job_name: str
    environment: dict[str, str]
    created_at_ms: int
    status: str = "RUNNABLE"  # RUNNABLE -> RUNNING -> SUCCEEDED | FAILED (Batch job states)
    attempts: list[AttemptRecord] = field(default_factory=list)
    process: WorkerHandle | None = None
    slot_free_at: float = 0.0  # time.time() when a worker slot was free for this job (capacity wait ends)
    spawned_at: list[float] = field(default_factory=list)  # time.time() of each attempt's process start
    finished_at: float | None = None

    @property
    def job_id(self) -> str:
        """The upscaler job id (not Batch's)."""
        return self.environment.get(ENV_JOB_ID, "")


class LocalJobQueue:
    def __init__(self, *, sqs: Any, queue_url: str, settings: Settings, base_env: Mapping[str, str],
                 workers: int, on_failed: Callable[[dict[str, Any]], None],
                 log_stream: IO[str] | None = None, command: Sequence[str] | None = None,
                 launcher: WorkerLauncher | None = None, stop_grace_seconds: float = 5.0) -> None:
        """`launcher` starts each attempt (default: spawn `command`, default `python -m gpu_batch.worker`)."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._sqs = sqs
        self._queue_url = queue_url
        self._settings = settings
        self._base_env = dict(base_env)
        self._workers = workers
        self._on_failed = on_failed
        self._log_stream = log_stream if log_stream is not None else sys.stderr
        self._launcher = launcher or SpawnLauncher(command)
        self._grace = stop_grace_seconds
        self._slots = threading.BoundedSemaphore(workers)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._dispatcher: threading.Thread | None = None
        self._job_threads: list[threading.Thread] = []
        self.jobs: dict[str, LocalBatchJob] = {}

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._dispatcher = threading.Thread(target=self._dispatch_forever, name="job-queue", daemon=True)
        self._dispatcher.start()

    def stop(self) -> None:
        """Stop taking jobs, terminate running workers (SIGTERM, then SIGKILL after the grace period)."""
        self._stop.set()
        if self._dispatcher:
            self._dispatcher.join(10)
        for job in self.running():
            self._signal(job, signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        for thread in list(self._job_threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        for job in self.running():
            self._signal(job, signal.SIGKILL)
        for thread in list(self._job_threads):
            thread.join(5)
        self._launcher.close()

    # --- inspection (tests, benchmark) ---------------------------------------------------
    def running(self) -> list[LocalBatchJob]:
        with self._lock:
            return [j for j in self.jobs.values() if j.process is not None and j.process.poll() is None]

    def find(self, job_id: str) -> LocalBatchJob | None:
        with self._lock:
            return next((j for j in self.jobs.values() if j.job_id == job_id), None)

    def kill(self, job_id: str, sig: int = signal.SIGKILL) -> bool:
        """Send `sig` to the running worker of `job_id` (simulates an OOM kill or a lost host)."""
        job = self.find(job_id)
        return job is not None and self._signal(job, sig)

    # --- internals -----------------------------------------------------------------------
    def _signal(self, job: LocalBatchJob, sig: int) -> bool:
        return job.process is not None and signal_worker(job.process, sig)

    def _dispatch_forever(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue
            slot_free_at = time.time()
            try:
                messages = self._sqs.receive_message(
                    QueueUrl=self._queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1,
                    MessageSystemAttributeNames=["SentTimestamp"],
                ).get("Messages", [])
            except Exception:
                self._slots.release()
                if not self._stop.is_set():
                    log.exception("job queue: receive failed; retrying")
                    time.sleep(1.0)
                continue
            if not messages:
                self._slots.release()
                continue
            self._accept(messages[0], slot_free_at)

    def _accept(self, message: Mapping[str, Any], slot_free_at: float) -> None:
        try:
            body = json.loads(message["Body"])
            job = LocalBatchJob(
                batch_job_id=str(uuid.uuid4()),
                job_name=str(body.get("job_name") or "upscale"),
                environment={str(k): str(v) for k, v in body["environment"].items()},
                created_at_ms=int(message.get("Attributes", {}).get("SentTimestamp") or time.time() * 1000),
                slot_free_at=slot_free_at,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            log.error("job queue: dropping a malformed job message: %.200s", message.get("Body"))
            self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
            self._slots.release()
            return
        # Batch owns the job from here on (SubmitJob returned); the queue message has served its purpose.
        self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
        with self._lock:
            self.jobs[job.batch_job_id] = job
        thread = threading.Thread(target=self._run_job, args=(job,), name=f"job-{job.job_id[:8]}", daemon=True)
        self._job_threads = [t for t in self._job_threads if t.is_alive()]
        self._job_threads.append(thread)
        thread.start()

    def _run_job(self, job: LocalBatchJob) -> None:
        try:
            for attempt in range(1, max(1, self._settings.job_attempts) + 1):
                record = self._run_attempt(job, attempt)
                job.attempts.append(record)
                if self._stop.is_set():
                    return  # shutting down: the job dies with the stack, no state change is emitted
                if record.exit_code == EXIT_OK:
                    job.status = "SUCCEEDED"
                    return
                if record.exit_code == EXIT_RETRYABLE and attempt < self._settings.job_attempts:
                    self._write(job, attempt, f"exit {EXIT_RETRYABLE}: retrying (job definition retry strategy)")
                    continue
                break
            job.status = "FAILED"
            self._write(job, len(job.attempts), f"job FAILED: {job.attempts[-1].status_reason}"
                        f" (exit code {job.attempts[-1].exit_code})")
            self._emit_failed(job)
        finally:
            job.finished_at = time.time()
            self._slots.release()

    def _run_attempt(self, job: LocalBatchJob, attempt: int) -> AttemptRecord:
        env = {
            **self._base_env,
            **job.environment,
            BATCH_ATTEMPT_ENV: str(attempt),
            "AWS_BATCH_JOB_ID": job.batch_job_id,
            "AWS_BATCH_JQ_NAME": self._settings.job_queue,
            "PYTHONUNBUFFERED": "1",
        }
        started = time.time()
        process = self._launcher.launch(env)
        job.process = process
        job.status = "RUNNING"
        job.spawned_at.append(started)
        reader = threading.Thread(target=self._pump_logs, args=(job, attempt, process), daemon=True)
        reader.start()
        timed_out = False
        try:
            returncode = process.wait(timeout=self._settings.job_timeout_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            signal_worker(process, signal.SIGKILL)
            returncode = process.wait()
        reader.join(5)
        stopped = time.time()
        if timed_out:
            return AttemptRecord(int(started * 1000), int(stopped * 1000), None, None, TIMEOUT_REASON)
        code = exit_code_of(returncode)
        reason = f"killed by signal {-returncode}" if returncode < 0 else None
        return AttemptRecord(int(started * 1000), int(stopped * 1000), code, reason)

    def _pump_logs(self, job: LocalBatchJob, attempt: int, process: WorkerHandle) -> None:
        for line in process.lines():
            self._write(job, attempt, line)

    def _write(self, job: LocalBatchJob, attempt: int, line: str) -> None:
        with self._log_lock:
            self._log_stream.write(f"[worker {job.job_id[:8]}#{attempt}] {line}\n")
            self._log_stream.flush()

    def _emit_failed(self, job: LocalBatchJob) -> None:
        event = batch_job_failed_event(
            job_id=job.batch_job_id,
            job_name=job.job_name,
            job_queue=self._settings.job_queue,
            job_definition=self._settings.job_definition,
            region=self._settings.region,
            environment=job.environment,
            attempts=job.attempts,
            created_at_ms=job.created_at_ms,
            retry_attempts=self._settings.job_attempts,
        )
        try:
            self._on_failed(event)
        except Exception:
            log.exception("job queue: delivering the FAILED event of job %s failed", job.job_id)
