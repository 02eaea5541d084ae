"""The local stand-in for AWS Batch: worker jobs wait for placement, then run the real worker as a process.

Drains the SQS queue that `common.scaling.LocalWorkerStarter` sends to. Like Batch, a job first waits
for capacity (at most `capacity` run at once) and a placement delay (`batch_delay`: Batch's fixed
cost of finding an instance and starting the container), then runs `python -m gpu_batch.worker` (the
container's command) with the job definition's environment plus the job's overrides. Only the
overrides the worker reads are passed on: the local queue is unauthenticated, and anything else
(PYTHONPATH, LD_PRELOAD...) would let whoever can write to it run code. When a job ends, its
"Batch Job State Change" event goes to `on_state_change` (in AWS: EventBridge -> scaler Lambda).
"""

from __future__ import annotations

import contextlib
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

from common.contract import ENV_WORKER_SLOT, ENV_WORKER_TOKEN, WORKER_MODULE
from common.settings import Settings
from local_stack.batch_events import batch_job_state_change, exit_code_of

log = logging.getLogger(__name__)

# Container overrides a worker job may set: the worker reads these and nothing else from its job.
ALLOWED_OVERRIDES = frozenset({ENV_WORKER_SLOT, ENV_WORKER_TOKEN})
TIMEOUT_REASON = "Job attempt duration exceeded timeout"


@dataclass
class LocalBatchJob:
    batch_job_id: str
    job_name: str
    environment: dict[str, str]
    created_at: float
    status: str = "RUNNABLE"  # RUNNABLE -> STARTING -> RUNNING -> SUCCEEDED | FAILED (Batch job states)
    process: subprocess.Popen[bytes] | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    exit_code: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # the worker's "worker exiting" log line


class LocalBatch:
    def __init__(self, *, sqs: Any, queue_url: str, settings: Settings, base_env: Mapping[str, str],
                 capacity: int, on_state_change: Callable[[dict[str, Any]], None], batch_delay: float = 0.0,
                 log_stream: IO[str] | None = None, command: Sequence[str] | None = None,
                 stop_grace_seconds: float = 10.0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._sqs = sqs
        self._queue_url = queue_url
        self._settings = settings
        self._base_env = dict(base_env)
        self._on_state_change = on_state_change
        self._delay = batch_delay
        self._log_stream = log_stream if log_stream is not None else sys.stderr
        self._command = list(command) if command else [sys.executable, "-m", WORKER_MODULE]
        self._grace = stop_grace_seconds
        self._capacity = threading.BoundedSemaphore(capacity)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._dispatcher: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self.jobs: dict[str, LocalBatchJob] = {}

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._dispatcher = threading.Thread(target=self._dispatch_forever, name="local-batch", daemon=True)
        self._dispatcher.start()

    def stop(self) -> None:
        """Stop taking jobs; SIGTERM running workers (they give their item back), SIGKILL after the grace."""
        self._stop.set()
        if self._dispatcher:
            self._dispatcher.join(10)
        for job in self.running():
            self.signal(job, signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        for job in self.running():
            self.signal(job, signal.SIGKILL)
        for thread in list(self._threads):
            thread.join(5)

    # --- inspection and faults (tests, benchmark) ----------------------------------------
    def running(self) -> list[LocalBatchJob]:
        with self._lock:
            return [j for j in self.jobs.values() if j.process is not None and j.process.poll() is None]

    def started(self) -> list[LocalBatchJob]:
        with self._lock:
            return [j for j in self.jobs.values() if j.started_at is not None]

    def signal(self, job: LocalBatchJob, sig: int) -> bool:
        """Send `sig` to a running worker (SIGKILL: an OOM kill or a lost host; SIGTERM: a spot reclaim)."""
        process = job.process
        if process is None or process.poll() is not None:
            return False
        try:
            process.send_signal(sig)
        except ProcessLookupError:
            return False
        return True

    # --- internals -----------------------------------------------------------------------
    def _dispatch_forever(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self._sqs.receive_message(QueueUrl=self._queue_url, MaxNumberOfMessages=10,
                                                     WaitTimeSeconds=1).get("Messages", [])
            except Exception:
                if not self._stop.is_set():
                    log.exception("local batch: receive failed; retrying")
                    self._stop.wait(1.0)
                continue
            for message in messages:
                self._accept(message)

    def _accept(self, message: Mapping[str, Any]) -> None:
        # Batch owns the job from here on (SubmitJob returned); the queue message has served its purpose.
        self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
        try:
            body = json.loads(message["Body"])
            overrides = {str(k): str(v) for k, v in body["environment"].items()}
            job = LocalBatchJob(batch_job_id=str(uuid.uuid4()), job_name=str(body.get("job_name") or "worker"),
                                environment={k: v for k, v in overrides.items() if k in ALLOWED_OVERRIDES},
                                created_at=time.time())
        except (KeyError, TypeError, ValueError, AttributeError):
            log.error("local batch: dropping a malformed job message: %.200s", message.get("Body"))
            return
        refused = sorted(set(overrides) - ALLOWED_OVERRIDES)
        if refused:
            log.warning("local batch: ignoring environment overrides the worker does not read: %s", refused)
        with self._lock:
            self.jobs[job.batch_job_id] = job
        thread = threading.Thread(target=self._run_job, args=(job,), name=f"batch-{job.job_name}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _run_job(self, job: LocalBatchJob) -> None:
        while not self._capacity.acquire(timeout=0.5):  # RUNNABLE: waiting for capacity
            if self._stop.is_set():
                return
        try:
            job.status = "STARTING"
            if self._stop.wait(self._delay):  # placement: instance, image pull, container start
                return
            self._run_worker(job)
        finally:
            self._capacity.release()
        if not self._stop.is_set():
            self._emit(job)

    def _run_worker(self, job: LocalBatchJob) -> None:
        env = {**self._base_env, **job.environment, "AWS_BATCH_JOB_ID": job.batch_job_id,
               "AWS_BATCH_JQ_NAME": self._settings.job_queue, "AWS_BATCH_JOB_ATTEMPT": "1",
               "PYTHONUNBUFFERED": "1"}
        job.started_at = time.time()
        # A session of its own: Ctrl-C in the terminal reaches the stack, which then stops the workers.
        process = subprocess.Popen(self._command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        job.process = process
        job.status = "RUNNING"
        reader = threading.Thread(target=self._pump_logs, args=(job, process), daemon=True)
        reader.start()
        try:
            returncode = process.wait(timeout=self._settings.worker_timeout_seconds)
            reason = f"killed by signal {-returncode}" if returncode < 0 else None
        except subprocess.TimeoutExpired:
            process.kill()
            returncode, reason = process.wait(), TIMEOUT_REASON
        reader.join(5)
        job.stopped_at = time.time()
        job.exit_code = exit_code_of(returncode)
        job.status = "SUCCEEDED" if returncode == 0 else "FAILED"
        if reason:
            self._write(job, f"job {job.status}: {reason}")

    def _pump_logs(self, job: LocalBatchJob, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with process.stdout:
            for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if '"worker exiting"' in line:
                    with contextlib.suppress(ValueError):
                        job.summary = json.loads(line)
                self._write(job, line)

    def _write(self, job: LocalBatchJob, line: str) -> None:
        with self._log_lock:
            self._log_stream.write(f"[{job.job_name} {job.batch_job_id[:8]}] {line}\n")
            self._log_stream.flush()

    def _emit(self, job: LocalBatchJob) -> None:
        event = batch_job_state_change(
            job_id=job.batch_job_id, job_name=job.job_name, status=job.status, job_queue=self._settings.job_queue,
            job_definition=self._settings.job_definition, region=self._settings.region,
            environment=job.environment, exit_code=job.exit_code, created_at_ms=int(job.created_at * 1000),
            started_at_ms=int((job.started_at or job.created_at) * 1000),
            stopped_at_ms=int((job.stopped_at or time.time()) * 1000))
        try:
            self._on_state_change(event)
        except Exception:
            log.exception("local batch: delivering the state change of %s failed", job.job_name)
