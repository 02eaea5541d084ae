"""The local stand-in for AWS Batch: worker jobs wait for placement, then run the real worker as a process.

Jobs arrive through `submit` (served to the Lambdas by local_stack.batch_api, which
`common.worker_backends.LocalWorkerBackend` calls). Like Batch, a job first waits for capacity (at most
`capacity` run at once) and a placement delay (`batch_delay`: Batch's fixed cost of finding an instance and
starting the container), then runs `python -m gpu_batch.worker` (the container's command) on an instance of
its own (one GPU per instance) with the job definition's environment plus the job's overrides. Only the
overrides the worker reads are passed on: the local API is unauthenticated, and anything else (PYTHONPATH,
LD_PRELOAD...) would let whoever can call it run code. `terminate` cancels a job still waiting and stops a
running one as ECS does (SIGTERM, SIGKILL after the stop timeout). When a job ends, its "Batch Job State
Change" event goes to `on_state_change` (in AWS: EventBridge -> scaler Lambda).

For fault runs (local_stack.faults): the capacity can change while jobs wait (`set_capacity`: no GPUs for a
while), a `launcher` may give one job's process its own command and environment (its own AWS endpoint, a
skewed clock), and `on_log_line` sees every line a worker prints.
"""

from __future__ import annotations

import contextlib
import itertools
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
    instance_id: str | None = None  # the "EC2 instance" it was placed on (one GPU, one worker job)
    status_reason: str | None = None  # why it was cancelled or stopped (TerminateJob's reason)
    terminate_requested_at: float | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    exit_code: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # the worker's "worker exiting" log line
    exiting_at: float | None = None  # when it logged that line (its slot is freed by then)


@dataclass(frozen=True, slots=True)
class WorkerLaunch:
    """How one job's process starts: environment on top of the job definition's, and its command (None:
    the stand-in's)."""

    environment: Mapping[str, str] = field(default_factory=dict)
    command: Sequence[str] | None = None


class LocalBatch:
    def __init__(self, *, settings: Settings, base_env: Mapping[str, str],
                 capacity: int, on_state_change: Callable[[dict[str, Any]], None], batch_delay: float = 0.0,
                 log_stream: IO[str] | None = None, command: Sequence[str] | None = None,
                 stop_grace_seconds: float = 10.0, launcher: Callable[[LocalBatchJob], WorkerLaunch] | None = None,
                 on_log_line: Callable[[LocalBatchJob, str], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._settings = settings
        self._base_env = dict(base_env)
        self._on_state_change = on_state_change
        self._delay = batch_delay
        self._log_stream = log_stream if log_stream is not None else sys.stderr
        self._command = list(command) if command else [sys.executable, "-m", WORKER_MODULE]
        self._grace = stop_grace_seconds
        self._launcher = launcher
        self._on_log_line = on_log_line
        self._capacity = capacity
        self._placed = 0
        self._room = threading.Condition()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._instances = itertools.count(1)
        self.jobs: dict[str, LocalBatchJob] = {}

    def configure(self, *, settings: Settings, base_env: Mapping[str, str]) -> None:
        """The settings and job definition environment, once the stack knows every address (before any job)."""
        self._settings = settings
        self._base_env = dict(base_env)

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Nothing runs until a job is submitted (kept for the stack's start/stop symmetry)."""

    def stop(self) -> None:
        """Stop taking jobs; SIGTERM running workers (they give their item back), SIGKILL after the grace."""
        self._stop.set()
        with self._room:
            self._room.notify_all()
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
    def set_capacity(self, capacity: int) -> None:
        """GPUs available from now on (0: none, jobs stay RUNNABLE); running jobs keep theirs."""
        with self._room:
            self._capacity = max(0, capacity)
            self._room.notify_all()

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

    # --- the Batch API (local_stack.batch_api serves these) ---------------------------------
    def submit(self, job_name: str, environment: Mapping[str, str]) -> str:
        """SubmitJob: the job is RUNNABLE until capacity and placement let it run. Returns its job id."""
        overrides = {str(k): str(v) for k, v in environment.items()}
        refused = sorted(set(overrides) - ALLOWED_OVERRIDES)
        if refused:
            log.warning("local batch: ignoring environment overrides the worker does not read: %s", refused)
        job = LocalBatchJob(batch_job_id=str(uuid.uuid4()), job_name=str(job_name or "worker"),
                            environment={k: v for k, v in overrides.items() if k in ALLOWED_OVERRIDES},
                            created_at=time.time())
        with self._lock:
            if self._stop.is_set():
                raise RuntimeError("local batch is stopping")
            self.jobs[job.batch_job_id] = job
            thread = threading.Thread(target=self._run_job, args=(job,), name=f"batch-{job.job_name}", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return job.batch_job_id

    def terminate(self, job_id: str, reason: str) -> None:
        """TerminateJob: a job not yet running is cancelled (FAILED); a running one gets SIGTERM, and SIGKILL
        after the stop timeout, as ECS stops a task. Unknown or ended jobs: nothing to do."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.status in ("SUCCEEDED", "FAILED"):
                return
            job.status_reason = reason
            job.terminate_requested_at = job.terminate_requested_at or time.time()
            process = job.process
        if process is None:
            return  # _run_job sees the reason before it starts a process, and ends the job FAILED
        self.signal(job, signal.SIGTERM)
        threading.Thread(target=self._kill_after_stop_timeout, args=(job,), daemon=True).start()

    def describe(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        """DescribeJobs, reduced to what the scaler reads: id, status, the instance it runs on."""
        with self._lock:
            found = [self.jobs[j] for j in job_ids if j in self.jobs]
            return [{"jobId": j.batch_job_id, "jobName": j.job_name, "status": j.status,
                     "instanceId": j.instance_id, "statusReason": j.status_reason} for j in found]

    def _kill_after_stop_timeout(self, job: LocalBatchJob) -> None:
        process = job.process
        if process is None:
            return
        try:
            process.wait(timeout=self._grace)
        except subprocess.TimeoutExpired:
            self.signal(job, signal.SIGKILL)

    # --- internals -----------------------------------------------------------------------
    def _run_job(self, job: LocalBatchJob) -> None:
        if self._place(job):
            try:
                with self._lock:
                    job.status = "STARTING"
                    job.instance_id = f"i-local{next(self._instances):012x}"
                if self._stop.wait(self._delay):  # placement: instance, image pull, container start
                    return
                if job.status_reason is None:
                    self._run_worker(job)
            finally:
                with self._room:
                    self._placed -= 1
                    self._room.notify_all()
        elif self._stop.is_set():
            return
        if job.process is None:  # cancelled before it ran (TerminateJob on a RUNNABLE or STARTING job)
            with self._lock:
                job.status, job.stopped_at = "FAILED", time.time()
        if not self._stop.is_set():
            self._emit(job)

    def _place(self, job: LocalBatchJob) -> bool:
        """RUNNABLE until a GPU is free. False: cancelled (TerminateJob) or stopping while it waited."""
        with self._room:
            while self._placed >= self._capacity:
                if self._stop.is_set() or job.status_reason is not None:
                    return False
                self._room.wait(0.5)
            self._placed += 1
            return True

    def _run_worker(self, job: LocalBatchJob) -> None:
        launch = self._launcher(job) if self._launcher else WorkerLaunch()
        env = {**self._base_env, **job.environment, **launch.environment, "AWS_BATCH_JOB_ID": job.batch_job_id,
               "AWS_BATCH_JQ_NAME": self._settings.job_queue, "AWS_BATCH_JOB_ATTEMPT": "1",
               "PYTHONUNBUFFERED": "1"}
        job.started_at = time.time()
        # A session of its own: Ctrl-C in the terminal reaches the stack, which then stops the workers.
        process = subprocess.Popen(list(launch.command or self._command), env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        with self._lock:
            job.process = process
            job.status = "RUNNING"
        if job.status_reason is not None:  # terminated while its container was starting
            self.signal(job, signal.SIGTERM)
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
        if reason and not self._stop.is_set():  # stopping with the stack is expected: nothing to report
            self._write(job, f"job {job.status}: {reason}")

    def _pump_logs(self, job: LocalBatchJob, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with process.stdout:
            for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if '"worker exiting"' in line:
                    job.exiting_at = time.time()
                    with contextlib.suppress(ValueError):
                        job.summary = json.loads(line)
                if self._on_log_line:
                    try:
                        self._on_log_line(job, line)
                    except Exception:  # an observer's bug must not stop the worker's logs
                        log.exception("local batch: the log observer failed")
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
            stopped_at_ms=int((job.stopped_at or time.time()) * 1000), reason=job.status_reason)
        try:
            self._on_state_change(event)
        except Exception:
            log.exception("local batch: delivering the state change of %s failed", job.job_name)
