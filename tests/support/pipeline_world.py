"""The whole flow in one process on moto: intake -> work queue -> worker -> notifier, with a settable clock.

Tests drive it step by step (`intake`, `work_once`, `drain_dead`) and can wrap every AWS client in a
`FaultPlan` that fails one chosen call, to prove the lifecycle's guarantees under each failure.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from fake_engine import FakeEngine
from sns_capture import capture_topic, drain_notifications

from common import aws
from common.jobs import JobRecord, JobStore, upload_job_id
from common.lifecycle import JobLifecycle, LifecyclePolicy
from common.notify import Notifier
from common.scaling import WorkerScaler, WorkerSlots
from common.settings import Settings
from common.work_queue import WorkQueue
from functions.intake.intake import Intake, IntakeResult
from functions.intake.s3_events import UploadEvent
from functions.notifier.dead_items import Outcome, settle_dead_item
from gpu_batch.worker.item import Disposition, Worker, process_delivery
from local_stack.resources import create_bucket, create_jobs_table, create_queue, work_queue_attributes


class FakeClock:
    """Wall, monotonic and datetime time that only move when told to (leases expire on demand)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def timedelta(self, seconds: float) -> timedelta:
        return timedelta(seconds=seconds)


@dataclass
class FaultPlan:
    """Fails the `fail_at`-th AWS call (counting every call on every wrapped client) once, with a 5xx."""

    fail_at: int | None = None
    calls: list[str] = field(default_factory=list)

    def wrap(self, client: Any, service: str) -> Any:
        return _Faulty(client, service, self)

    def hit(self, name: str) -> None:
        index = len(self.calls)
        self.calls.append(name)
        if index == self.fail_at:
            raise ClientError({"Error": {"Code": "InternalError", "Message": f"injected: {name}"},
                               "ResponseMetadata": {"HTTPStatusCode": 500}}, name)


class _Faulty:
    def __init__(self, client: Any, service: str, plan: FaultPlan) -> None:
        self._client, self._service, self._plan = client, service, plan

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name in ("generate_presigned_url", "can_paginate", "get_paginator") \
                or name.startswith("_") or name == "meta":
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._plan.hit(f"{self._service}.{name}")
            return attr(*args, **kwargs)
        return call


class TimelessQueue(WorkQueue):
    """The work queue in a world whose time is simulated: a give-back's backoff delay has passed at once."""

    def send_body(self, body: str, *, delay_seconds: int = 0) -> str:
        return super().send_body(body)


class WorkerKilled(BaseException):
    """Raised from inside the engine: the worker process dies right there (no release, no terminal write)."""


@dataclass
class PipelineWorld:
    settings: Settings
    clock: FakeClock
    plan: FaultPlan
    s3: Any
    raw_s3: Any  # unwrapped: the test's own uploads never fail
    sqs: Any
    raw_sns: Any
    store: JobStore
    raw_store: JobStore  # unwrapped: what the test reads never fails
    lifecycle: JobLifecycle
    queue: WorkQueue
    dlq_url: str
    capture_url: str
    engine: FakeEngine
    starts: list[int]

    @property
    def intake(self) -> Intake:
        scaler = WorkerScaler(slots=WorkerSlots(self.store, clock=self.clock.wall), queue=self.queue,
                              backend=_RecordingBackend(self.starts), max_workers=2, start_grace_seconds=60,
                              clock=self.clock.wall)
        return Intake(self.settings, s3=self.s3, lifecycle=self.lifecycle, work_queue=self.queue, scaler=scaler,
                      lease_seconds=30, clock=self.clock.wall)

    @property
    def worker(self) -> Worker:
        return Worker(settings=self.settings, engine=self.engine, s3=self.s3, lifecycle=self.lifecycle,
                      queue=self.queue, clock=self.clock)

    def upload(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> UploadEvent:
        put = self.raw_s3.put_object(Bucket=self.settings.input_bucket, Key=key, Body=data, Metadata=metadata or {})
        return UploadEvent(self.settings.input_bucket, key, len(data), put["ETag"].strip('"'), put.get("VersionId"),
                           "ObjectCreated:Put")

    def job_id(self, event: UploadEvent) -> str:
        return upload_job_id(event.bucket, event.key, event.version_id, event.etag, event.size)

    def record(self, event: UploadEvent) -> JobRecord | None:
        return self.raw_store.get(self.job_id(event))

    # --- steps, as the event source mapping, the worker loop and the DLQ mapping do them ---------
    def run_intake(self, event: UploadEvent) -> IntakeResult | Exception:
        try:
            return self.intake.process(event)
        except Exception as exc:  # the SQS message returns: the caller delivers it again
            self.clock.advance(31)  # past intake's own lease, as the queue's visibility timeout would be
            return exc

    def work_once(self) -> Disposition | None:
        """Receive one visible item and do it as the worker loop does; None when the queue had none."""
        try:
            delivery = self.queue.receive(wait_seconds=0, visibility_seconds=self.settings.work_visibility_seconds)
        except ClientError:  # the worker loop logs it and polls again
            return None
        if delivery is None:
            return None
        try:
            disposition = process_delivery(self.worker, delivery)  # settles the message itself
        except WorkerKilled:  # the process died with the image: its message and claim simply lapse
            disposition = Disposition.RETRY
        except Exception:
            disposition = Disposition.RETRY
        if disposition is Disposition.RETRY:
            with contextlib.suppress(ClientError):
                self.queue.hide(delivery, 0)  # time passes: its visibility timeout (or backoff) is over
        if disposition is not Disposition.DONE:
            self.clock.advance(self.settings.work_visibility_seconds + 1)  # and so is any claim's lease
        return disposition

    def drain_dead(self) -> list[Outcome | Exception]:
        outcomes: list[Outcome | Exception] = []
        while messages := self.sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10).get("Messages"):
            for message in messages:
                try:
                    outcomes.append(settle_dead_item(message["Body"], lifecycle=self.lifecycle, send=self.queue.send,
                                                     now=self.clock.now()))
                    self.sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=message["ReceiptHandle"])
                except Exception as exc:
                    outcomes.append(exc)
                    self.sqs.change_message_visibility(QueueUrl=self.dlq_url,
                                                       ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
        return outcomes

    def notifications(self) -> list[dict[str, Any]]:
        return drain_notifications(self.sqs, self.capture_url)

    def settle(self, event: UploadEvent, *, rounds: int = 30, until: Callable[[], bool] | None = None) -> None:
        """Deliver intake's event and every work item again until the job is terminal and notified."""
        def done() -> bool:
            record = self.record(event)
            return record is not None and record.state.is_terminal and record.attributes.get("notified") is True
        for _ in itertools.repeat(None, rounds):
            if (until or done)():
                return
            self.run_intake(event)
            while self.work_once() is not None:
                pass
            self.drain_dead()
        raise AssertionError(f"job did not settle: {self.record(event)}")


class _RecordingBackend:
    def __init__(self, starts: list[int]) -> None:
        self._starts = starts

    def start(self, slot: int, token: str) -> str:
        self._starts.append(slot)
        return f"batch-{len(self._starts)}"

    def terminate(self, job_id: str, reason: str) -> None:
        """Nothing runs in this world."""

    def jobs_on_instance(self, instance_id: str, job_ids: Sequence[str]) -> list[str]:
        return []


def make_pipeline_world(*, fail_at: int | None = None, **overrides: Any) -> PipelineWorld:
    """Build inside `mock_aws()`: buckets, table, topic + capture queue, work queue + DLQ."""
    base = Settings(**{"region": "us-east-1", "jobs_table": "jobs-lifecycle", "work_visibility_seconds": 30,
                       "max_attempts": 3, **overrides})
    s3, ddb, sns, sqs = (aws.client(n, base) for n in ("s3", "dynamodb", "sns", "sqs"))
    for bucket in (base.input_bucket, base.output_bucket):
        create_bucket(s3, bucket, base.region)
    create_jobs_table(ddb, base.jobs_table)
    topic_arn, capture_url = capture_topic(sns, sqs)
    dlq_url, dlq_arn = create_queue(sqs, "work-dlq")
    work_url, _ = create_queue(sqs, "work", work_queue_attributes(base, dlq_arn))
    settings = base.replace(topic_arn=topic_arn, work_queue_url=work_url)
    plan = FaultPlan(fail_at=fail_at)
    clock = FakeClock()
    store = JobStore(dynamodb_client=plan.wrap(ddb, "dynamodb"), table_name=settings.jobs_table)
    notifier = Notifier(sns_client=plan.wrap(sns, "sns"), topic_arn=topic_arn, upload_prefix=settings.upload_prefix)
    return PipelineWorld(
        settings=settings, clock=clock, plan=plan, s3=plan.wrap(s3, "s3"), raw_s3=s3, sqs=sqs, raw_sns=sns,
        store=store,
        raw_store=JobStore(dynamodb_client=ddb, table_name=settings.jobs_table),
        lifecycle=JobLifecycle(store=store, notifier=notifier, policy=LifecyclePolicy.from_settings(settings),
                               clock=clock.wall, sleep=lambda _s: None),
        queue=TimelessQueue(sqs_client=plan.wrap(sqs, "sqs"), queue_url=work_url), dlq_url=dlq_url,
        capture_url=capture_url, engine=FakeEngine(), starts=[])
