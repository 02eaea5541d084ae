"""Worker slots and the scaler (common.scaling, functions/scaler) on moto: a burst starts at most max_workers,
concurrent callers never start more, a dead worker's slot comes back, and the Lambda reports what it did."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto import mock_aws
from recording_batch import RecordingBatch, serving

from common import aws
from common.contract import ENV_WORKER_SLOT, ENV_WORKER_TOKEN
from common.jobs import JobStore
from common.scaling import WorkerScaler, WorkerSlots
from common.settings import Settings
from common.work_queue import WorkQueue
from common.worker_backends import BatchWorkerBackend, worker_job_name
from functions.scaler import handler
from infra.config import InfraConfig, worker_capacity
from local_stack.batch_events import batch_job_state_change
from local_stack.resources import create_jobs_table, create_queue


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


class Context:
    """The Lambda context the handler's Powertools decorators read."""

    function_name, memory_limit_in_mb, aws_request_id = "scaler", 256, "req-1"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:scaler"


@dataclass
class Backend:
    started: list[tuple[int, str]] = field(default_factory=list)
    terminated: list[tuple[str, str]] = field(default_factory=list)
    placements: dict[str, str] = field(default_factory=dict)  # job id -> instance id
    fail: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, slot: int, token: str) -> str:
        if self.fail:
            raise RuntimeError("Batch said no")
        with self.lock:
            self.started.append((slot, token))
            return f"job-{len(self.started)}"

    def terminate(self, job_id: str, reason: str) -> None:
        with self.lock:
            self.terminated.append((job_id, reason))

    def jobs_on_instance(self, instance_id: str, job_ids: Sequence[str]) -> list[str]:
        return [j for j in job_ids if self.placements.get(j) == instance_id]


@dataclass
class World:
    settings: Settings
    store: JobStore
    queue: WorkQueue
    clock: Clock
    starter: Backend

    def scaler(self, max_workers: int = 3) -> WorkerScaler:
        return WorkerScaler(slots=WorkerSlots(self.store, clock=self.clock), queue=self.queue, backend=self.starter,
                            max_workers=max_workers, start_grace_seconds=600, clock=self.clock)

    def enqueue(self, n: int) -> None:
        for i in range(n):
            self.queue._sqs.send_message(QueueUrl=self.queue.url, MessageBody=json.dumps({"n": i}))


@pytest.fixture
def world(aws_creds: None) -> Iterator[World]:
    with mock_aws():
        settings = Settings(jobs_table="jobs-scaler")
        ddb, sqs = aws.client("dynamodb", settings), aws.client("sqs", settings)
        create_jobs_table(ddb, settings.jobs_table)
        url, _ = create_queue(sqs, "work")
        yield World(settings.replace(work_queue_url=url), JobStore(dynamodb_client=ddb, table_name="jobs-scaler"),
                    WorkQueue(sqs_client=sqs, queue_url=url), Clock(), Backend())


def test_one_item_on_an_idle_system_starts_one_worker_now(world: World) -> None:
    world.enqueue(1)
    result = world.scaler().ensure()
    assert (result.depth, result.live, [s for s, _ in result.started]) == (1, 1, [0])
    assert world.scaler().ensure().started == ()  # it is still there: nothing more


def test_a_burst_starts_at_most_max_workers_whatever_its_size(world: World) -> None:
    world.enqueue(40)
    for _ in range(5):
        world.scaler().ensure()
    assert sorted(s for s, _ in world.starter.started) == [0, 1, 2]


def test_concurrent_callers_never_start_more_than_max_workers(world: World) -> None:
    world.enqueue(20)
    barrier = threading.Barrier(6)

    def call() -> None:
        barrier.wait()
        world.scaler().ensure()

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(s for s, _ in world.starter.started) == [0, 1, 2]  # each slot started once, no more


def test_a_worker_that_died_frees_its_slot_when_its_lease_lapses_or_batch_says_so(world: World) -> None:
    world.enqueue(2)
    world.scaler(max_workers=1).ensure()
    (slot, token), = world.starter.started
    slots = WorkerSlots(world.store, clock=world.clock)
    assert slots.renew(slot, token, lease_seconds=120)  # the worker runs...
    assert world.scaler(max_workers=1).ensure().started == ()
    world.clock.t += 121  # ...and dies without a word: its items come back, its slot lapses
    assert [s for s, _ in world.scaler(max_workers=1).ensure().started] == [0]
    (_, newer), = world.starter.started[1:]
    assert world.scaler(max_workers=1).worker_ended({ENV_WORKER_SLOT: "0", ENV_WORKER_TOKEN: newer})
    assert not world.scaler(max_workers=1).worker_ended({ENV_WORKER_SLOT: "0", ENV_WORKER_TOKEN: token})  # stale
    assert not world.scaler().worker_ended({"OTHER": "x"})


def test_a_submit_failure_gives_the_slot_back(world: World) -> None:
    world.enqueue(1)
    world.starter.fail = True
    result = world.scaler().ensure()
    assert result.started == () and "Batch said no" in result.errors[0]
    world.starter.fail = False
    assert [s for s, _ in world.scaler().ensure().started] == [0]


def test_the_longest_wait_for_a_gpu_is_reported(world: World) -> None:
    world.enqueue(1)
    world.scaler().ensure()
    world.clock.t += 500  # Batch has not placed it: no quota, no spot capacity
    assert world.scaler().ensure().oldest_start_wait == pytest.approx(500)


def test_max_workers_counts_the_vcpus_a_worker_really_spends_on_the_allowed_types() -> None:
    """Finding 9: Batch may place 8-vCPU, 1-GPU types; a 16-vCPU environment then holds 2 workers, not 4."""
    assert worker_capacity(16, 4, ("g5.xlarge", "g4dn.xlarge")) == 4
    assert worker_capacity(16, 4, ("g5.xlarge", "g5.2xlarge", "g4dn.xlarge", "g4dn.2xlarge")) == 2
    assert worker_capacity(96, 4, ("g5.12xlarge",)) == 8  # 4 GPUs per 48 vCPUs
    assert worker_capacity(16, 4, ("g5",)) == 1  # a family alone may mean g5.16xlarge: one GPU for 64 vCPUs
    assert InfraConfig().max_workers == worker_capacity(16, 4, InfraConfig().instance_types)


def test_a_slot_reused_after_its_grace_first_terminates_the_job_still_waiting_for_a_gpu(world: World) -> None:
    """Finding 9: with no GPU capacity, each grace period submitted another job for the same slot, and the
    RUNNABLE ones piled up; now the superseded job is terminated before its slot is reused."""
    world.enqueue(1)
    first = world.scaler(max_workers=1).ensure()
    (_, old_job), = first.started
    world.clock.t += 601  # no capacity: it waited its whole grace without starting
    second = world.scaler(max_workers=1).ensure()
    assert world.starter.terminated == [(old_job, "superseded: its worker slot 0 was given to a new job")]
    assert second.cancelled == (old_job,) and len(second.started) == 1
    world.clock.t += 601
    third = world.scaler(max_workers=1).ensure()
    assert [j for j, _ in world.starter.terminated] == [old_job, second.started[0][1]]
    assert len(third.started) == 1  # at any time, one job per slot at most: never a pile


def test_a_spot_warning_stops_the_workers_on_that_instance_only(world: World) -> None:
    world.enqueue(3)
    started = world.scaler().ensure().started
    jobs = [job for _, job in started]
    world.starter.placements = {jobs[0]: "i-doomed", jobs[1]: "i-doomed", jobs[2]: "i-other"}
    stopped = world.scaler().stop_workers_on_instance("i-doomed")
    assert sorted(stopped) == sorted(jobs[:2])
    assert {j for j, reason in world.starter.terminated} == set(jobs[:2])
    assert all("spot interruption" in reason for _, reason in world.starter.terminated)


def test_the_batch_backend_finds_the_jobs_on_an_instance_through_ecs() -> None:
    from botocore.stub import Stubber

    batch, ecs = aws.client("batch", Settings()), aws.client("ecs", Settings())
    backend = BatchWorkerBackend(batch_client=batch, ecs_client=ecs, job_queue="q", job_definition="d")
    arn = "arn:aws:ecs:us-east-1:123456789012:container-instance/batch-cluster/abc123"
    with Stubber(batch) as batch_stub, Stubber(ecs) as ecs_stub:
        batch_stub.add_response("describe_jobs", {"jobs": [
            {"jobId": "j1", "jobName": "w", "jobQueue": "q", "status": "RUNNING", "startedAt": 1,
             "jobDefinition": "d", "container": {"containerInstanceArn": arn}},
            {"jobId": "j2", "jobName": "w", "jobQueue": "q", "status": "RUNNABLE", "startedAt": 1,
             "jobDefinition": "d"}]}, {"jobs": ["j1", "j2"]})
        ecs_stub.add_response("describe_container_instances", {"containerInstances": [
            {"containerInstanceArn": arn, "ec2InstanceId": "i-doomed"}]},
            {"cluster": "batch-cluster", "containerInstances": [arn]})
        batch_stub.add_response("terminate_job", {}, {"jobId": "j1", "reason": "spot"})
        assert backend.jobs_on_instance("i-doomed", ["j1", "j2"]) == ["j1"]
        backend.terminate("j1", "spot")


def test_batch_backend_submits_a_worker_job_with_its_slot() -> None:
    from botocore.stub import Stubber

    batch = aws.client("batch", Settings())
    starter = BatchWorkerBackend(batch_client=batch, ecs_client=aws.client("ecs", Settings()), job_queue="q",
                                 job_definition="d")
    with Stubber(batch) as stub:
        stub.add_response("submit_job", {"jobId": "b-1", "jobName": "n", "jobArn": "arn"}, {
            "jobName": worker_job_name(2), "jobQueue": "q", "jobDefinition": "d",
            "containerOverrides": {"environment": [{"name": ENV_WORKER_SLOT, "value": "2"},
                                                   {"name": ENV_WORKER_TOKEN, "value": "tok"}]},
            "tags": {"upscaler:worker_slot": "2"}, "propagateTags": True})
        assert starter.start(2, "tok") == "b-1"


def test_the_lambda_frees_an_ended_workers_slot_and_scales(world: World, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    recorder = RecordingBatch()
    with serving(recorder) as batch_url:
        _scale_through_the_lambda(world, recorder, batch_url, monkeypatch)
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf and "WorkerStartWaitSeconds" in emf[-1] and "LiveWorkers" in emf[-1]


def _scale_through_the_lambda(world: World, recorder: RecordingBatch, batch_url: str,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in world.settings.replace(job_backend="local", local_batch_url=batch_url,
                                              max_workers=2).to_env().items():
        monkeypatch.setenv(name, value)
    handler.get_scaler.cache_clear()
    world.enqueue(3)

    try:
        scheduled = {"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}
        assert handler.lambda_handler(scheduled, Context())["started"] == 2
        env = recorder.submitted[0][1]
        ended = batch_job_state_change(job_id="b", job_name="w", status="FAILED", job_queue="q",
                                       job_definition="d", region="us-east-1", environment=env, exit_code=137,
                                       created_at_ms=0, started_at_ms=0, stopped_at_ms=1)
        result: dict[str, Any] = handler.lambda_handler(ended, Context())
        assert result["freed_slot"] is True and result["started"] == 1  # a new worker for the items left
    finally:
        handler.get_scaler.cache_clear()


def test_the_lambda_routes_a_spot_warning_to_stop_the_workers_on_that_instance(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 4: ECS spot draining never stops a Batch job; the EventBridge warning now does, through the scaler."""
    recorder = RecordingBatch()
    with serving(recorder) as batch_url:
        for name, value in world.settings.replace(job_backend="local", local_batch_url=batch_url,
                                                  max_workers=2).to_env().items():
            monkeypatch.setenv(name, value)
        handler.get_scaler.cache_clear()
        world.enqueue(2)

        try:
            handler.lambda_handler({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}},
                                   Context())
            recorder.placements = {"local-job-1": "i-0abc", "local-job-2": "i-0def"}
            warning = {"version": "0", "id": "e1", "detail-type": "EC2 Spot Instance Interruption Warning",
                       "source": "aws.ec2", "account": "123456789012", "time": "2026-12-07T10:00:00Z",
                       "region": "us-east-1", "resources": ["arn:aws:ec2:us-east-1b:instance/i-0abc"],
                       "detail": {"instance-id": "i-0abc", "instance-action": "terminate"}}
            assert handler.lambda_handler(warning, Context()) == {"instance_id": "i-0abc",
                                                                  "stopped": ["local-job-1"]}
        finally:
            handler.get_scaler.cache_clear()
    assert [job for job, _ in recorder.terminated] == ["local-job-1"]
