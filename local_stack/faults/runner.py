"""Drive uploads through the whole local pipeline under a seeded schedule of faults, then check the promise.

The real intake, notifier and scaler handlers run as Lambda processes and the real worker as Batch job
processes (through `local_stack.faults.worker`, for poison images and skewed clocks), each behind its own
fault proxy port. Images are tiny PNGs upscaled with `animevideov3`; a few are poison. Leases are short
(seconds) so a run of a hundred uploads heals in minutes. The run has settled when every job is terminal
and notified and nothing is left anywhere (queues, workers, Lambda invocations, held requests, webhook
retries), or, once the pipeline is idle with jobs unfinished, when nothing can finish them any more (no
sweeper) or the settle deadline passes.
"""

from __future__ import annotations

import random
import tempfile
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import ClientError
from PIL import Image, PngImagePlugin

from common import aws
from common.contract import ENV_WORKER_SLOT, TERMINAL_STATES
from common.jobs import JobStore, upload_job_id
from common.scaling import SLOT_KEY_PREFIX
from common.settings import Settings
from local_stack.event_source import MappingConfig
from local_stack.faults.catalogue import FAULTS, TIME_SCALE, FaultTiming, arm
from local_stack.faults.injector import Armed, FaultInjector, Upload
from local_stack.faults.invariants import Copy, History, Verdict, VersionOutcome, WorkerJob, check
from local_stack.faults.schedule import PlannedUpload, plan
from local_stack.faults.worker import POISON_MARKER
from local_stack.receiver import ReceivedNotification, WebhookReceiver
from local_stack.resources import QueueConfig
from local_stack.stack import SWEEPER_HANDLER, LocalStack, LocalStackConfig
from local_stack.webhooks import DeliveryPolicy

DEFAULTS = Settings()  # as deployed
SETTLE_POLL_SECONDS = 0.5
SETTLE_SAY_SECONDS = 10.0  # how often the log says what a settling run still waits on
IDLE_FINAL_SECONDS = 10.0  # idle this long with no sweeper: nothing can change any more


@dataclass(frozen=True)
class ChaosConfig:
    uploads: int = 60
    seed: int = 1
    faults: tuple[str, ...] = tuple(FAULTS)
    rate: float = 0.2  # faults per healthy upload
    killers: int | None = None  # poison images; None: one per 30 uploads, at least one
    workers: int = 2
    model: str = "animevideov3"
    max_attempts: int = 3
    work_visibility_seconds: int = 6  # a claim's lease: a dead worker's image comes back within seconds
    worker_idle_seconds: int = 4
    worker_start_grace_seconds: int = 10
    scaler_interval_seconds: float = 2.0
    sweeper_interval_seconds: float = 2.0
    sweeper: bool | None = None  # None: when functions/sweeper/handler.py exists
    intake_visibility_seconds: int = 30  # at least the intake timeout, as AWS requires
    mean_gap_seconds: float = 0.5  # between uploads
    # After the last upload; longer than intake's own lease on a record (functions.intake.intake), which holds
    # off the retries of a record whose intake was killed mid-way.
    settle_timeout_seconds: float = 420.0
    timing: FaultTiming = field(default_factory=FaultTiming)
    log_path: Path | None = None  # every process's logs; None: a temporary file

    @property
    def poison_images(self) -> int:
        return self.killers if self.killers is not None else max(1, self.uploads // 30)


@dataclass(frozen=True)
class ChaosResult:
    config: ChaosConfig
    history: History
    verdicts: list[Verdict]
    armed: list[Armed]
    latency_faulted: list[float]  # upload to first notification, seconds, of uploads a fault aimed at
    latency_clean: list[float]
    settled: bool  # False: the settle deadline passed first
    unsettled: str  # when not settled: what was still busy at the deadline
    seconds: float
    log_path: Path

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)


# Webhook retries in seconds rather than minutes: a run settles quickly.
QUICK_DELIVERY = DeliveryPolicy(immediate_retries=1, backoff_retries=10, min_delay_seconds=0.25,
                                max_delay_seconds=1.0, timeout_seconds=5)


def run(config: ChaosConfig) -> ChaosResult:
    from gpu_batch.engine.models import ensure_model

    ensure_model(config.model)
    began = time.monotonic()
    planned = plan(config.seed, config.uploads, config.faults, rate=config.rate, killers=config.poison_images,
                   mean_gap_seconds=config.mean_gap_seconds)
    injector = FaultInjector()
    log_path = config.log_path or Path(tempfile.mkstemp(prefix="chaos-", suffix=".log")[1])
    receiver = WebhookReceiver().start()
    try:
        with log_path.open("w") as log, LocalStack(_stack_config(config, injector, receiver, log)) as stack:
            injector.journal = lambda text: print(f"[fault] {text}", file=log, flush=True)
            if not stack.webhook_subscriptions[0].confirmed.wait(30):
                raise RuntimeError("the webhook subscription was not confirmed")
            drive = _Drive(stack, injector, config)
            injector.uploader = drive.put
            uploads = drive.upload(planned)
            settled = drive.settle(uploads, receiver)
            unsettled = "" if settled else drive.busy()
            injector.disarm()
            injector.finalize()
            history = drive.history(uploads, receiver)
    finally:
        receiver.stop()
    faulted = {v.job_id for u in uploads if u.fault for v in history.versions if v.key == u.key}
    latency: dict[bool, list[float]] = {True: [], False: []}
    uploaded_at = {job: at for u in uploads for job, at in zip(u.job_ids, u.uploaded_at, strict=True)}
    for v in history.versions:
        if v.copies:
            latency[v.job_id in faulted].append(min(c.received_at for c in v.copies) - uploaded_at[v.job_id])
    return ChaosResult(config, history, check(history), list(injector.armed), latency[True], latency[False],
                       settled, unsettled, time.monotonic() - began, log_path)


def _stack_config(config: ChaosConfig, injector: FaultInjector, receiver: WebhookReceiver,
                  log: IO[str]) -> LocalStackConfig:
    sweeper = config.sweeper if config.sweeper is not None else _has_sweeper()
    return LocalStackConfig(
        workers=config.workers, webhooks=(receiver.url,), scaler_interval_seconds=config.scaler_interval_seconds,
        settings_overrides={"work_visibility_seconds": config.work_visibility_seconds,
                            "worker_idle_seconds": config.worker_idle_seconds,
                            "worker_start_grace_seconds": config.worker_start_grace_seconds,
                            "max_attempts": config.max_attempts,
                            # the sweeper's bounds, AWS's hours scaled as the faults' minutes are
                            "stale_accepted_seconds": round(DEFAULTS.stale_accepted_seconds * TIME_SCALE),
                            "job_deadline_seconds": round(DEFAULTS.job_deadline_seconds * TIME_SCALE)},
        delivery_policy=QUICK_DELIVERY, mapping=MappingConfig(batch_size=10, batching_window_seconds=0.2, pollers=2),
        queue=QueueConfig(visibility_timeout_seconds=config.intake_visibility_seconds, max_receive_count=5),
        intake_timeout_seconds=int(config.timing.intake_timeout_seconds), log_stream=log, faults=injector,
        sweeper_handler=SWEEPER_HANDLER if sweeper else None,
        sweeper_interval_seconds=config.sweeper_interval_seconds)


def _has_sweeper() -> bool:
    """Whether the functions package in use has the sweeper Lambda (merged from the lead's branch)."""
    import functions

    return (Path(functions.__file__).parent / "sweeper" / "handler.py").exists()


def image(seed: int, index: int, size: tuple[int, int], *, poison: bool = False) -> bytes:
    """A small noisy PNG, the same for the same seed and index; a poison one carries POISON_MARKER."""
    rng = random.Random(f"{seed}/{index}")
    picture = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    info = PngImagePlugin.PngInfo()
    if poison:
        info.add_text("Comment", POISON_MARKER.decode())
    out = BytesIO()
    picture.save(out, "PNG", pnginfo=info)
    return out.getvalue()


class _Drive:
    def __init__(self, stack: LocalStack, injector: FaultInjector, config: ChaosConfig) -> None:
        assert stack.settings is not None and stack.resources is not None
        self.stack, self.injector, self.config = stack, injector, config
        self.settings = stack.settings
        self.s3 = aws.client("s3", self.settings)
        self.sqs = aws.client("sqs", self.settings)
        self.store = JobStore(dynamodb_client=aws.client("dynamodb", self.settings),
                              table_name=self.settings.jobs_table)
        self.queues = (stack.resources.intake_queue_url, stack.resources.work_queue_url,
                       stack.resources.work_dlq_url)

    # --- uploads ---------------------------------------------------------------------------------
    def upload(self, planned: Sequence[PlannedUpload]) -> list[Upload]:
        uploads = []
        for p in planned:
            time.sleep(p.gap_seconds)  # the workload's pace, not a wait for a condition
            key = f"{self.settings.upload_prefix}chaos-{self.config.seed}/{p.index:05d}.png"
            upload = Upload(p.index, key, killer=p.killer, fault=p.fault, size=p.size)
            if p.fault:
                arm(self.injector, p.fault, upload, p.params, self.config.timing)
            self.put(upload)
            uploads.append(upload)
        return uploads

    def put(self, upload: Upload) -> None:
        """Upload the next version of the upload's key (a new image each time)."""
        body = image(self.config.seed, upload.index * 10 + len(upload.versions), upload.size, poison=upload.killer)
        put = self.s3.put_object(Bucket=self.settings.input_bucket, Key=upload.key, Body=body,
                                 Metadata={"model": self.config.model})
        version = str(put.get("VersionId"))
        self.injector.register(upload, version, upload_job_id(self.settings.input_bucket, upload.key, version,
                                                              put.get("ETag"), len(body)))

    # --- settling --------------------------------------------------------------------------------
    def settle(self, uploads: Sequence[Upload], receiver: WebhookReceiver) -> bool:
        """Wait until the run settled; False when the deadline came first."""
        deadline = time.monotonic() + self.config.settle_timeout_seconds
        idle_since: float | None = None
        sweeper = self.stack.config.sweeper_handler is not None
        next_said = time.monotonic()
        while time.monotonic() < deadline:
            busy = self.busy()
            if busy and time.monotonic() >= next_said:  # the log says what the run waited on, and when
                self.injector.journal(f"settle: waiting on {busy} ({time.strftime('%H:%M:%S')})")
                next_said = time.monotonic() + SETTLE_SAY_SECONDS
            if not busy:
                idle_since = idle_since or time.monotonic()
                if self._finished([j for u in uploads for j in u.job_ids], receiver):  # a race adds versions
                    return True
                if not sweeper and time.monotonic() - idle_since >= IDLE_FINAL_SECONDS:
                    return True  # nothing left that could finish the rest
            else:
                idle_since = None
            time.sleep(SETTLE_POLL_SECONDS)
        return False

    def _finished(self, jobs: Sequence[str], receiver: WebhookReceiver) -> bool:
        records = self.store.get_many(jobs)
        return all(_terminal(records.get(j)) and receiver.for_job(j) for j in jobs)

    def busy(self) -> str:
        """What is still at work ("" when nothing is): worker jobs, invocations, held requests, webhook
        retries, messages in a queue."""
        batch, webhooks = self.stack.batch, self.stack.webhooks
        assert batch is not None and webhooks is not None
        jobs = [j.status for j in list(batch.jobs.values()) if j.status not in ("SUCCEEDED", "FAILED")]
        if jobs:
            return f"worker jobs {', '.join(sorted(jobs))}"
        doing = [f"Lambda invocations {n}" for n in [self.stack.invocations_in_flight()] if n]
        doing += [f"webhook retries {n}" for n in [webhooks.pending_retries()] if n]
        doing += [f"request {r}" for r in self.injector.in_flight]
        if doing:
            return ", ".join(doing)
        queues = [*self.queues, *(s.queue_url for s in webhooks.subscriptions.values())]
        return ", ".join(f"{url.rsplit('/', 1)[-1]} holds {depth}" for url in queues if (depth := self._depth(url)))

    def _depth(self, url: str) -> str:
        """The queue's messages by kind ("" when it is empty), e.g. "1 not visible"."""
        kinds = {"ApproximateNumberOfMessages": "visible", "ApproximateNumberOfMessagesNotVisible": "not visible",
                 "ApproximateNumberOfMessagesDelayed": "delayed"}
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(kinds))["Attributes"]
        return ", ".join(f"{n} {kind}" for name, kind in kinds.items() if (n := int(attrs.get(name, 0))))

    # --- the history -----------------------------------------------------------------------------
    def history(self, uploads: Sequence[Upload], receiver: WebhookReceiver) -> History:
        jobs = [j for u in uploads for j in u.job_ids]
        records = self.store.get_many(jobs)
        copies: defaultdict[str, list[Copy]] = defaultdict(list)
        for n in list(receiver.notifications):
            copies[str(n.payload.get("job_id"))].append(_copy(n))
        logs, injector = self.injector.logs, self.injector
        assert self.stack.batch is not None
        died = [j.batch_job_id for j in list(self.stack.batch.jobs.values())
                if j.process is not None and (j.process.returncode or 0) < 0]  # killed by a signal
        inference_deaths = Counter(job for worker in died for job in injector.inference_marked.get(worker, ()))
        versions = []
        for u in uploads:
            for i, (version, job) in enumerate(zip(u.versions, u.job_ids, strict=True)):
                record = records.get(job) or {}
                versions.append(VersionOutcome(
                    key=u.key, version=version, job_id=job, newest=i == len(u.versions) - 1, killer=u.killer,
                    state=record.get("state"), copies=tuple(copies.get(job, ())),
                    terminal_writes=tuple(injector.terminal_writes.get(job, ())), inferences=logs.inferences[job],
                    kill_hits=injector.kill_hits[job], poison_deaths=logs.poison_deaths[job],
                    inference_deaths=inference_deaths[job]))
        return History(versions=versions, outputs=self._outputs(uploads, records),
                       worker_jobs=self._worker_jobs(), max_attempts=self.config.max_attempts,
                       max_workers=self.config.workers, other_records=self._other_records(set(jobs)))

    def _outputs(self, uploads: Sequence[Upload], records: dict[str, dict[str, Any]]) -> dict[str, str | None]:
        outputs: dict[str, str | None] = {}
        for u in uploads:
            output_key = next((str(records[j]["output_key"]) for j in u.job_ids
                               if records.get(j, {}).get("output_key")), None)
            outputs[u.key] = self._source_version(output_key) if output_key else None
        return outputs

    def _source_version(self, output_key: str) -> str | None:
        try:
            head = self.s3.head_object(Bucket=self.settings.output_bucket, Key=output_key)
        except ClientError:
            return None
        source = (head.get("Metadata") or {}).get("source-version")
        return urllib.parse.unquote(source) if source else None

    def _worker_jobs(self) -> list[WorkerJob]:
        assert self.stack.batch is not None
        return [WorkerJob(job_id=j.batch_job_id, slot=j.environment.get(ENV_WORKER_SLOT), created_at=j.created_at,
                          ended_at=min((t for t in (j.stopped_at, j.exiting_at, j.terminate_requested_at)
                                        if t is not None), default=None))
                for j in list(self.stack.batch.jobs.values())]

    def _other_records(self, ours: set[str]) -> dict[str, str]:
        ddb = aws.client("dynamodb", self.settings)
        found: dict[str, str] = {}
        for page in ddb.get_paginator("scan").paginate(TableName=self.settings.jobs_table,
                                                       ProjectionExpression="job_id, #s",
                                                       ExpressionAttributeNames={"#s": "state"}):
            for item in page.get("Items", []):
                job_id = item["job_id"]["S"]
                if job_id not in ours and not job_id.startswith(SLOT_KEY_PREFIX):
                    found[job_id] = item.get("state", {}).get("S", "")
        return found


def _terminal(record: dict[str, Any] | None) -> bool:
    return record is not None and record.get("state") in {str(s) for s in TERMINAL_STATES}


def _copy(n: ReceivedNotification) -> Copy:
    attribute = (n.envelope.get("MessageAttributes") or {}).get("event_id") or {}
    return Copy(event_id=str(n.payload.get("event_id", "")), attribute_event_id=attribute.get("Value"),
                event_type=str(n.payload.get("event_type", "")), message=str(n.envelope.get("Message", "")),
                received_at=n.received_at)
