"""One work item, start to finish: claim the job, download, upscale, upload, finish it, delete the item.

`process_delivery` is a plain function of its collaborators (engine, S3 client, lifecycle, queue,
clock), so tests drive it in-process. What happens to the item afterwards is the return value: deleted
(done, whichever way), left to come back (a retryable failure, or a notification still unsent), or
given back at once (SIGTERM). `begin_delivery` is the same work split at the terminal step: the worker
loop runs that step (terminal write, publish) in the background while the next image is upscaled.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from common.contract import (
    Durations,
    ErrorInfo,
    EventType,
    FailureCode,
    ImageInfo,
    JobState,
    Notification,
    WorkItem,
    WorkItemError,
    seconds_since,
)
from common.lifecycle import Claim, ClaimOutcome, Holder, JobLifecycle, NotificationPending
from common.presign import presign_get
from common.settings import Settings
from common.work_queue import Delivery, WorkQueue
from gpu_batch.engine import EngineError, EngineOutOfMemoryError, UndecodableImageError, UpscaleResult

from .errors import Failure, InputMissingError, JobInterrupted, classify_storage_error
from .runtime import Clock, StopSignal, critical_section
from .storage import download_input, upload_output

logger = Logger(service="upscaler-worker")


class Upscaler(Protocol):
    """What the worker needs of gpu_batch.engine.Engine (tests pass a fake with the same methods)."""

    def preload(self, model: str, scale: float) -> None: ...

    def provider(self, model: str) -> str: ...

    def upscale_bytes(self, data: bytes, *, model: str, scale: float, output_format: str | None,
                      quality: int | None, tile_size: int, progress: Callable[[int, int], None] | None,
                      strength: float) -> UpscaleResult: ...


class Disposition(enum.StrEnum):
    """What becomes of the delivery after `process_delivery`."""

    DONE = "done"  # deleted: the job is terminal (and notified), or the item was not ours to do
    RETRY = "retry"  # left on the queue: it comes back after its visibility timeout
    RELEASED = "released"  # made visible again now (SIGTERM): another worker takes it


@dataclass(slots=True)
class Timings:
    """Seconds per phase of this attempt (None where a phase did not run)."""

    queued: float | None = None
    claim: float | None = None
    download: float | None = None
    inference: float | None = None
    upload: float | None = None
    finish: float | None = None  # terminal write + publish
    item: float | None = None  # claim to finish: this worker's time on the item
    total: float | None = None  # enqueued to finished

    def durations(self) -> Durations:
        return Durations(queued=_r(self.queued), download=_r(self.download), inference=_r(self.inference),
                         upload=_r(self.upload), total=_r(self.total))

    def as_record(self) -> dict[str, float]:
        return {k: v for k, v in ((name, _r(getattr(self, name))) for name in self.__slots__) if v is not None}


@dataclass(slots=True)
class Worker:
    """The collaborators one worker process shares across its items."""

    settings: Settings
    engine: Upscaler
    s3: Any
    lifecycle: JobLifecycle
    queue: WorkQueue
    clock: Clock
    runtime_info: Mapping[str, str | None] = field(default_factory=dict)
    models_loaded: set[str] = field(default_factory=set)  # the engine loads each model once per process
    stop: StopSignal = field(default_factory=StopSignal)  # installed by main(): SIGTERM sets it


FinishStep = Callable[[], Disposition]
_ITEM_KEYS = ["job_id", "delivery", "provider"]


def process_delivery(worker: Worker, delivery: Delivery) -> Disposition:
    """Do one delivery of a work item, and say what becomes of the message (the caller deletes/releases it)."""
    step = begin_delivery(worker, delivery)
    return step if isinstance(step, Disposition) else step()


def begin_delivery(worker: Worker, delivery: Delivery) -> Disposition | FinishStep:
    """Everything up to the terminal step; that step (terminal write and publish, which no signal
    interrupts) is returned for the caller to run, in any thread, when it is not already done."""
    try:
        item = WorkItem.from_json(delivery.body)
    except WorkItemError as exc:
        logger.error("dropping a message that is not a work item", extra={"error": str(exc),
                                                                          "message_id": delivery.message_id})
        return Disposition.DONE
    keys = {"job_id": item.job_id, "delivery": delivery.receive_count}
    logger.thread_safe_append_keys(**keys)
    try:
        step = _process_item(worker, item, delivery)
    finally:
        logger.thread_safe_remove_keys(_ITEM_KEYS)
    if isinstance(step, Disposition):
        return step
    keys["provider"] = worker.engine.provider(str(item.options.model))

    def finish() -> Disposition:
        logger.thread_safe_append_keys(**keys)
        try:
            with critical_section():
                return step()
        finally:
            logger.thread_safe_remove_keys(_ITEM_KEYS)
    return finish


def _process_item(worker: Worker, item: WorkItem, delivery: Delivery) -> Disposition | FinishStep:
    settings, clock, lifecycle = worker.settings, worker.clock, worker.lifecycle
    started = clock.monotonic()
    timings = Timings(queued=seconds_since(item.enqueued_at, clock.now()))
    # The download runs beside the claim (both wait on the network); a delivery that does not get the
    # claim (a duplicate, a finished job) just drops what it fetched.
    fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="download")
    downloading = fetcher.submit(_timed_download, worker, item)
    fetcher.shutdown(wait=False)
    result = lifecycle.claim(item.job_id, lease_seconds=settings.claim_lease_seconds,
                             message_id=delivery.message_id, attributes={
                                 "worker": {k: v for k, v in worker.runtime_info.items() if v},
                                 "delivery": delivery.receive_count})
    timings.claim = clock.monotonic() - started
    if result.outcome is ClaimOutcome.TERMINAL:
        assert result.record is not None
        try:
            if lifecycle.resume(result.record):
                logger.info("published the notification a previous attempt stored")
        except NotificationPending:  # being sent elsewhere, or SNS still refuses: look again later
            return Disposition.RETRY
        return Disposition.DONE
    if result.outcome is ClaimOutcome.MISSING:
        logger.error("no job record for this item: nothing to run or report")
        return Disposition.DONE
    if result.outcome is ClaimOutcome.HELD and result.held_by_another_message(delivery.message_id):
        # A second copy of the item (a resend, or SQS's at-least-once delivery) while a live worker holds
        # the job with the first: the first copy stays on the queue until its job is done; drop this one.
        logger.info("a duplicate copy of an item another worker holds; dropped")
        return Disposition.DONE
    if result.outcome in (ClaimOutcome.HELD, ClaimOutcome.NOT_QUEUED):
        # This very message came back while its claim still runs (a renewal was late), or intake has not
        # finished queueing: look again when that lease would have run out.
        wait = max(1, int(result.seconds_held(clock.wall()) + 1)) if result.outcome is ClaimOutcome.HELD else 5
        logger.info("job held; looking again later", extra={"outcome": str(result.outcome), "seconds": wait})
        worker.queue.hide(delivery, wait)
        return Disposition.RETRY
    claim = result.claim
    assert claim is not None
    logger.info("job claimed", extra={"attempt": claim.attempt})

    heartbeat = _Heartbeat(worker, delivery, claim)
    heartbeat.start()
    try:
        upscaled, output_version = _upscale(worker, item, timings, downloading)
    except JobInterrupted as exc:
        heartbeat.stop()
        logger.warning("interrupted; giving the item back", extra={"reason": str(exc)})
        with critical_section():
            lifecycle.release(claim)
        return Disposition.RELEASED
    except Exception as exc:
        heartbeat.stop()
        failure = classify(exc)
        last = delivery.receive_count >= settings.max_attempts
        if failure.retryable and not last:
            logger.warning("transient failure; the item comes back", extra={"error_code": str(failure.code),
                                                                         "error": failure.message}, exc_info=exc)
            with critical_section():
                lifecycle.release(claim)
                worker.queue.hide(delivery, retry_delay(delivery.receive_count))
            return Disposition.RETRY
        logger.error("job failed", extra={"error_code": str(failure.code), "error": failure.message},
                     exc_info=exc)
        timings.item = clock.monotonic() - started
        with critical_section():
            return _finish_failed(worker, item, claim, failure, timings)
    heartbeat.stop()
    timings.item = clock.monotonic() - started
    return lambda: _finish_succeeded(worker, item, claim, upscaled, output_version, timings,
                                     started=started)


def classify(exc: BaseException) -> Failure:
    """Map an exception to the failure code the client sees and whether another attempt may help."""
    if isinstance(exc, InputMissingError):
        return Failure(FailureCode.INPUT_MISSING, str(exc), retryable=False)
    if isinstance(exc, UndecodableImageError):
        return Failure(FailureCode.UNDECODABLE_IMAGE, str(exc) or "the image cannot be decoded", retryable=False)
    if isinstance(exc, EngineOutOfMemoryError):
        return Failure(FailureCode.OUT_OF_MEMORY, str(exc) or "out of GPU memory", retryable=True)
    if isinstance(exc, EngineError):
        # e.g. a CUDA error (another host may succeed) or an output the format cannot hold (permanent)
        return Failure(FailureCode.INFERENCE_ERROR, str(exc) or type(exc).__name__,
                       retryable=not getattr(exc, "permanent", False))
    if isinstance(exc, ClientError | BotoCoreError | OSError):
        return classify_storage_error(exc, action="talking to AWS")
    return Failure(FailureCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", retryable=False)


def _timed_download(worker: Worker, item: WorkItem) -> tuple[bytes, str | None, float]:
    t0 = worker.clock.monotonic()
    data, version = download_input(worker.s3, item)
    return data, version, worker.clock.monotonic() - t0


def _upscale(worker: Worker, item: WorkItem, timings: Timings,
             downloading: Future[tuple[bytes, str | None, float]]) -> tuple[UpscaleResult, str | None]:
    settings, clock, engine = worker.settings, worker.clock, worker.engine
    model = str(item.options.model)
    data, input_version, timings.download = downloading.result()
    t0 = clock.monotonic()
    engine.preload(model, scale=item.options.scale)  # the network for this scale; cached after its first load
    if model not in worker.models_loaded:
        worker.models_loaded.add(model)
        logger.info("model loaded", extra={"model": model, "seconds": _r(clock.monotonic() - t0)})
    logger.thread_safe_append_keys(provider=engine.provider(model))

    fmt = str(item.output_format)
    quality = {"jpeg": settings.jpeg_quality, "webp": settings.webp_quality}.get(fmt)
    if worker.stop.requested.is_set():
        raise JobInterrupted("stop requested before inference")
    t0 = clock.monotonic()
    worker.stop.busy = True  # only inference is interrupted by SIGTERM: the claim is known and released
    try:
        logger.info("inference started")
        result = engine.upscale_bytes(data, model=model, scale=item.options.scale, output_format=fmt,
                                      quality=quality, tile_size=settings.tile_size, progress=_ProgressLog(clock),
                                      strength=item.options.strength)
    finally:
        worker.stop.busy = False
    timings.inference = clock.monotonic() - t0
    logger.info("upscaled", extra={"input": f"{result.input_width}x{result.input_height}",
                                   "output": f"{result.output_width}x{result.output_height}",
                                   "format": result.format, "inference_seconds": _r(timings.inference),
                                   "warnings": list(result.warnings)})
    t0 = clock.monotonic()
    output_version = upload_output(
        worker.s3, bucket=item.output_bucket, key=item.output_key, data=result.data,
        content_type=result.content_type,
        metadata={"job-id": item.job_id, "source-bucket": item.input_bucket, "source-key": item.input_key,
                  "source-version": input_version, "model": result.model, "scale": result.scale,
                  "input-width": result.input_width, "input-height": result.input_height,
                  "output-width": result.output_width, "output-height": result.output_height,
                  "provider": result.provider},
    )
    timings.upload = clock.monotonic() - t0
    return result, output_version


def _finish_succeeded(worker: Worker, item: WorkItem, claim: Claim, result: UpscaleResult,
                      output_version: str | None, timings: Timings, *,
                      started: float) -> Disposition:
    clock = worker.clock
    t0 = clock.monotonic()
    link = presign_get(worker.s3, bucket=item.output_bucket, key=item.output_key, version=output_version,
                       expires_in=worker.settings.presigned_url_expiry_seconds, now=clock.now())
    timings.total = (timings.queued or 0.0) + (clock.monotonic() - started)
    notification = Notification(
        event_type=EventType.SUCCEEDED, job_id=item.job_id,
        input=ImageInfo(item.input_bucket, item.input_key, result.input_width, result.input_height,
                        item.input_format),
        output=ImageInfo(item.output_bucket, item.output_key, result.output_width, result.output_height,
                         result.format),
        presigned_url=link.url, presigned_url_expires_at=_iso(link.expires_at),
        model=result.model, scale=result.scale, durations=timings.durations(),
        warnings=tuple(item.warnings) + tuple(result.warnings) + tuple(w for w in [link.warning()] if w),
    )
    finish = worker.lifecycle.finish(notification, JobState.SUCCEEDED, holder=Holder.CLAIM, claim=claim, attributes={
        "output_bucket": item.output_bucket, "output_key": item.output_key, "output_version": output_version,
        "output_format": result.format, "output_bytes": len(result.data), "input_width": result.input_width,
        "input_height": result.input_height, "output_width": result.output_width,
        "output_height": result.output_height, "provider": result.provider, "durations": timings.as_record(),
    })
    timings.finish = clock.monotonic() - t0
    if not finish.won:
        return _claim_lost(worker, item)
    logger.info("job succeeded", extra={"durations": timings.as_record(), "notified": finish.sent})
    return Disposition.DONE if finish.sent else Disposition.RETRY


def _finish_failed(worker: Worker, item: WorkItem, claim: Claim, failure: Failure, timings: Timings) -> Disposition:
    notification = Notification(
        event_type=EventType.FAILED, job_id=item.job_id,
        input=ImageInfo(item.input_bucket, item.input_key, item.input_width, item.input_height, item.input_format),
        model=str(item.options.model), scale=item.options.scale, durations=timings.durations(),
        error=ErrorInfo(code=str(failure.code), message=failure.message[:1000], retryable=failure.retryable),
    )
    finish = worker.lifecycle.finish(notification, JobState.FAILED, holder=Holder.CLAIM, claim=claim, attributes={
        "error_code": str(failure.code), "error_message": failure.message[:1000],
        "durations": timings.as_record()})
    if not finish.won:
        return _claim_lost(worker, item)
    return Disposition.DONE if finish.sent else Disposition.RETRY


def _claim_lost(worker: Worker, item: WorkItem) -> Disposition:
    """The terminal write lost: the job was taken over (this worker ran past its lease) or finished elsewhere.
    Its message is left alone unless the job is done: the holder's delivery may be this very message."""
    record = worker.lifecycle.store.get(item.job_id)
    logger.warning("the claim was lost while this worker ran; its holder speaks for the job",
                   extra={"state": str(record.state) if record else None})
    return Disposition.DONE if record is None or record.state.is_terminal else Disposition.RETRY


def retry_delay(receive_count: int) -> int:
    """Back off before the next delivery of an item that failed for a transient reason."""
    return min(300, 5 * 2 ** max(0, receive_count - 1))


class _Heartbeat:
    """While an image is processed: renew the item's visibility and the claim's lease, a third of the way in."""

    def __init__(self, worker: Worker, delivery: Delivery, claim: Claim) -> None:
        self._worker = worker
        self._delivery = delivery
        self._claim = claim
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="item-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        settings, clock = self._worker.settings, self._worker.clock
        started = clock.monotonic()
        while not self._stop.wait(settings.heartbeat_seconds):
            if clock.monotonic() - started > settings.max_item_seconds:
                # Hung (e.g. a stuck CUDA call): let the lease lapse so another worker takes the item.
                logger.error("image still in hand after max_item_seconds; no longer renewing its lease")
                return
            try:
                self._worker.queue.hide(self._delivery, settings.work_visibility_seconds)
                if not self._worker.lifecycle.renew(self._claim, settings.claim_lease_seconds):
                    logger.warning("claim lost: another delivery took the job over")
                    return
            except Exception:  # a dead heartbeat would hand the image to a second worker: keep trying
                logger.warning("could not renew the item's lease; trying again", exc_info=True)


class _ProgressLog:
    """Logs tile progress at most every 10% (the engine calls back once per tile)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._started = clock.monotonic()
        self._next_step = 0.1

    def __call__(self, done: int, total: int) -> None:
        if total <= 0:
            return
        fraction = done / total
        if fraction >= self._next_step or done == total:
            logger.info("inference progress", extra={"tiles_done": done, "tiles_total": total,
                                                     "elapsed_seconds": _r(self._clock.monotonic() - self._started)})
            while self._next_step <= fraction:
                self._next_step += 0.1


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

