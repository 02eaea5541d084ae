"""The local AWS Batch stand-in: capacity, placement delay, the worker's environment, state change events,
TerminateJob (cancel while waiting, SIGTERM when running) and the instance each job runs on."""

from __future__ import annotations

import io
import json
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from common.contract import ENV_WORKER_SLOT, ENV_WORKER_TOKEN
from common.settings import Settings
from common.worker_backends import LocalWorkerBackend
from local_stack.batch import LocalBatch, LocalBatchJob, WorkerLaunch
from local_stack.batch_api import LocalBatchApi
from local_stack.batch_events import exit_code_of

PRINT_ENV = ("import json, os, sys; print(json.dumps({k: os.environ.get(k) for k in "
             "('PYTHONPATH', 'LD_PRELOAD', 'UPSCALER_WORKER_SLOT', 'UPSCALER_WORKER_TOKEN', 'AWS_BATCH_JOB_ID')}));"
             "sys.exit(int(os.environ.get('UPSCALER_WORKER_SLOT', '0')) % 2)")
SLEEP = "import time; time.sleep(60)"


class Harness:
    def __init__(self, command: str, *, capacity: int = 2, delay: float = 0.0, **hooks: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.log = io.StringIO()
        self.batch = LocalBatch(settings=Settings(), base_env={"PATH": "/usr/bin"},
                                capacity=capacity, on_state_change=self.events.append, batch_delay=delay,
                                log_stream=self.log, command=[sys.executable, "-c", command], stop_grace_seconds=2,
                                **hooks)
        self.api = LocalBatchApi(self.batch)
        self.api.start()
        self.starter = LocalWorkerBackend(url=self.api.url)
        self.batch.start()


@pytest.fixture
def harness() -> Iterator[Any]:
    made: list[Harness] = []

    def make(command: str, **kwargs: Any) -> Harness:
        made.append(Harness(command, **kwargs))
        return made[-1]

    yield make
    for h in made:
        h.batch.stop()
        h.api.stop()


def test_exit_codes_map_like_containers() -> None:
    assert (exit_code_of(0), exit_code_of(1), exit_code_of(-9), exit_code_of(-15)) == (0, 1, 137, 143)


def test_only_the_overrides_the_worker_reads_reach_it_and_each_end_is_an_event(harness: Any, wait: Any) -> None:
    """The local queue is unauthenticated: a PYTHONPATH or LD_PRELOAD in a job message must not reach the process."""
    h = harness(PRINT_ENV)
    h.starter.start(2, "token-2")
    h.starter._call("submitjob", {"jobName": "hostile", "environment": {
        ENV_WORKER_SLOT: "3", ENV_WORKER_TOKEN: "t", "PYTHONPATH": "/tmp/evil", "LD_PRELOAD": "/tmp/evil.so"}})
    wait(lambda: len(h.events) == 2, timeout=60, what="two state change events")
    seen = [json.loads(line.split("] ", 1)[1]) for line in h.log.getvalue().splitlines() if '"PYTHONPATH"' in line]
    assert len(seen) == 2
    assert all(s["PYTHONPATH"] is None and s["LD_PRELOAD"] is None and s["AWS_BATCH_JOB_ID"] for s in seen)
    assert sorted(s["UPSCALER_WORKER_SLOT"] for s in seen) == ["2", "3"]
    by_slot = {next(v["value"] for v in e["detail"]["container"]["environment"] if v["name"] == ENV_WORKER_SLOT):
               e["detail"] for e in h.events}
    assert (by_slot["2"]["status"], by_slot["2"]["container"]["exitCode"]) == ("SUCCEEDED", 0)
    assert (by_slot["3"]["status"], by_slot["3"]["container"]["exitCode"]) == ("FAILED", 1)
    assert all(e["detail-type"] == "Batch Job State Change" for e in h.events)


def test_capacity_and_placement_delay_hold_jobs_runnable(harness: Any, wait: Any) -> None:
    h = harness(SLEEP, capacity=1, delay=0.5)
    for slot in range(2):
        h.starter.start(slot, f"t{slot}")
    wait(lambda: len(h.batch.running()) == 1, timeout=30, what="one worker running")
    first = h.batch.running()[0]
    assert first.started_at is not None and first.started_at - first.created_at >= 0.5  # the placement delay
    wait(lambda: len(h.batch.jobs) == 2, timeout=30, what="the second job accepted")
    waiting = [j for j in h.batch.jobs.values() if j is not first]
    assert [j.status for j in waiting] == ["RUNNABLE"]  # no capacity left
    assert h.batch.signal(first, signal.SIGKILL)
    wait(lambda: h.events and h.events[0]["detail"]["container"]["exitCode"] == 137, timeout=30,
         what="the killed worker's FAILED event")
    wait(lambda: waiting[0].status == "RUNNING", timeout=30, what="the waiting job placed")
    assert waiting[0].started_at is not None and waiting[0].started_at >= time.time() - 30


def test_terminate_cancels_a_waiting_job_and_stops_a_running_one_on_its_instance(harness: Any, wait: Any) -> None:
    h = harness(SLEEP, capacity=1)
    running_id, waiting_id = h.starter.start(0, "t0"), h.starter.start(1, "t1")
    wait(lambda: len(h.batch.running()) == 1, timeout=30, what="one worker running")
    (running,) = h.batch.running()
    assert running.batch_job_id == running_id and running.instance_id
    assert h.starter.jobs_on_instance(running.instance_id, [running_id, waiting_id]) == [running_id]
    h.starter.terminate(waiting_id, "superseded")  # still RUNNABLE: cancelled, never started
    wait(lambda: h.batch.jobs[waiting_id].status == "FAILED", timeout=30, what="the waiting job cancelled")
    assert h.batch.jobs[waiting_id].started_at is None
    h.starter.terminate(running_id, "spot interruption")  # running: SIGTERM (this one exits on it)
    wait(lambda: running.exit_code is not None, timeout=30, what="the running job stopped")
    assert running.exit_code == 143 and running.status_reason == "spot interruption"
    assert {e["detail"]["jobId"] for e in h.events} >= {running_id, waiting_id}


def test_capacity_can_go_to_zero_and_come_back_while_jobs_wait(harness: Any, wait: Any) -> None:
    """No GPU capacity for a while: jobs stay RUNNABLE (never placed), and run once capacity is back."""
    h = harness(SLEEP, capacity=1)
    h.batch.set_capacity(0)
    job_id = h.starter.start(0, "t0")
    wait(lambda: job_id in h.batch.jobs, timeout=30, what="the job accepted")
    assert not h.batch.running() and h.batch.jobs[job_id].status == "RUNNABLE"
    h.batch.set_capacity(1)
    wait(lambda: h.batch.jobs[job_id].status == "RUNNING", timeout=30, what="the job placed")
    waiting_id = h.starter.start(1, "t1")  # capacity 1, in use: this one waits, then is cancelled
    h.starter.terminate(waiting_id, "superseded")
    wait(lambda: h.batch.jobs[waiting_id].status == "FAILED", timeout=30, what="the waiting job cancelled")
    assert h.batch.jobs[waiting_id].terminate_requested_at is not None


def test_a_launcher_gives_one_job_its_own_command_and_environment_and_an_observer_sees_its_lines(
        harness: Any, wait: Any) -> None:
    seen: list[tuple[str, str]] = []

    def launch(job: LocalBatchJob) -> WorkerLaunch:
        code = "import os; print('endpoint', os.environ['UPSCALER_ENDPOINT_URL'])"
        return WorkerLaunch(environment={"UPSCALER_ENDPOINT_URL": f"http://proxy/{job.batch_job_id}"},
                            command=(sys.executable, "-c", code))

    h = harness(SLEEP, launcher=launch, on_log_line=lambda job, line: seen.append((job.batch_job_id, line)))
    job_id = h.starter.start(0, "t0")
    wait(lambda: h.events, timeout=30, what="the job to end")
    assert seen == [(job_id, f"endpoint http://proxy/{job_id}")]


EXITS_ON_SIGTERM = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); "
                    "print('ready', flush=True); time.sleep(60)")
IGNORES_SIGTERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "print('ready', flush=True); time.sleep(60)")


@pytest.mark.parametrize(("command", "exit_code"), [(EXITS_ON_SIGTERM, 0), (IGNORES_SIGTERM, 137)])
def test_stop_asks_with_sigterm_kills_only_after_the_grace_and_reports_nothing_alarming(
        harness: Any, wait: Any, command: str, exit_code: int) -> None:
    """An expected shutdown: a worker that exits on SIGTERM is never killed, and none says 'killed by signal'."""
    h = harness(command)
    h.starter.start(0, "t0")
    wait(lambda: "ready" in h.log.getvalue(), timeout=30, what="the worker to start")
    (job,) = h.batch.running()
    h.batch.stop()
    assert job.exit_code == exit_code
    assert "killed by signal" not in h.log.getvalue() and not h.events  # no state change: the stack is going
