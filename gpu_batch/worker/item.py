"""One work item's steps, each a plain function of its collaborators (engine, S3 client, lifecycle, queue, clock).

The worker loop (loop.py) runs them as a pipeline: `take` (parse, claim, download, decode) ahead of the GPU,
`upscale` (the network) on the GPU, `complete` (encode, write the output, the terminal write and its
notification) beside it. Whatever becomes of the item's message is decided here and done at once (`settle`):
deleted when its job is done, given back as a fresh copy (a give-back never burns a receive), or left to come
back after its visibility timeout when a notification is still unsent. Tests call them in-process.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from common.abandoned import fail_crashed
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
from common.jobs import JobRecord
from common.lifecycle import Claim, ClaimOutcome, ClaimResult, Holder, JobLifecycle, NotificationPending
from common.presign import presign_get
from common.settings import Settings
from common.work_queue import Delivery, WorkQueue
from gpu_batch.engine import EngineError, EngineOutOfMemoryError, UndecodableImageError, UpscaleResult

from .errors import Failure, InputMissingError, JobInterrupted, classify_storage_error
from .outputs import Placed, Superseded, place_output
from .runtime import Clock, StopSignal, critical_section
from .storage import download_input

logger = Logger(service="upscaler-worker")

PreparedT = TypeVar("PreparedT")
InferredT = TypeVar("InferredT")


class Upscaler(Protocol[PreparedT, InferredT]):
    """What the worker needs of gpu_batch.engine.Engine (tests pass a fake with the same methods)."""

    def preload(self, model: str, scale: float) -> None: ...

    def provider(self, model: str) -> str: ...

    def prepare(self, data: bytes, *, model: str, scale: float, output_format: str | None,
                strength: float) -> PreparedT: ...

    def infer(self, prepared: PreparedT, *, tile_size: int, progress: Callable[[int, int], None] | None) -> InferredT:
        ...

    def encode(self, inferred: InferredT, *, quality: int | None) -> UpscaleResult: ...

    def peak_host_bytes(self, prepared: PreparedT, tile_size: int) -> int:
        """The most host memory the image needs at any stage (what a pipelined worker adds up)."""
        ...


class Disposition(enum.StrEnum):
    """What became of one delivery."""

    DONE = "done"  # deleted: the job is terminal (and notified), or the item was not ours to do
    RETRY = "retry"  # left on the queue: it comes back after its visibility timeout (or was hidden until then)
    RELEASED = "released"  # given back as a fresh copy: another delivery takes it


@dataclass(slots=True)
class Timings:
    """Seconds per phase of this attempt (None where a phase did not run)."""

    queued: float | None = None
    claim: float | None = None
    download: float | None = None
    decode: float | None = None
    wait: float | None = None  # decoded, waiting for the GPU
    inference: float | None = None  # the network
    encode: float | None = None
    upload: float | None = None
    finish: float | None = None  # terminal write + publish
    item: float | None = None  # claim to finish: this worker's time on the item
    total: float | None = None  # enqueued to finished

    def durations(self) -> Durations:
        engine = sum(t for t in (self.decode, self.inference, self.encode) if t is not None)
        return Durations(queued=_r(self.queued), download=_r(self.download),
                         inference=_r(engine) if self.inference is not None else None, upload=_r(self.upload),
                         total=_r(self.total))

    def as_record(self) -> dict[str, float]:
        return {k: v for k, v in ((name, _r(getattr(self, name))) for name in self.__slots__) if v is not None}


@dataclass(slots=True)
class Worker:
    """The collaborators one worker process shares across its items."""

    settings: Settings
    engine: Upscaler[Any, Any]
    s3: Any
    lifecycle: JobLifecycle
    queue: WorkQueue
    clock: Clock
    runtime_info: Mapping[str, str | None] = field(default_factory=dict)
    models_loaded: set[str] = field(default_factory=set)  # the engine loads each model once per process
    stop: StopSignal = field(default_factory=StopSignal)  # installed by main(): SIGTERM sets it
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass(slots=True)
class Held:
    """An item this worker holds a claim on, from `take` until its message is settled."""

    delivery: Delivery
    item: WorkItem
    claim: Claim
    taken_at: float  # monotonic
    timings: Timings
    input_version: str | None = None
    prepared: Any = None  # the engine's decoded image, until the GPU takes it
    inferred: Any = None  # the network's result, until it is encoded
    host_bytes: int | None = None  # its share of the worker's memory budget, once admitted (loop.py)
    lost: bool = False  # the lease keeper found the claim taken over

    @property
    def job_id(self) -> str:
        return self.item.job_id


_ITEM_KEYS = ["job_id", "delivery"]


def take(worker: Worker, delivery: Delivery) -> Held | Disposition:
    """Parse, claim, download and decode one delivery. A Held item is the caller's to upscale (and its lease is
    the caller's to keep); any other outcome has been settled already."""
    try:
        item = WorkItem.from_json(delivery.body)
    except WorkItemError as exc:
        logger.error("dropping a message that is not a work item", extra={"error": str(exc),
                                                                          "message_id": delivery.message_id})
        return settle(worker, delivery, Disposition.DONE)
    with _item_logging(item.job_id, delivery):
        return _take(worker, delivery, item)


def _take(worker: Worker, delivery: Delivery, item: WorkItem) -> Held | Disposition:
    clock, lifecycle = worker.clock, worker.lifecycle
    started = clock.monotonic()
    timings = Timings(queued=seconds_since(item.enqueued_at, clock.now()))
    # The download runs beside the claim (both wait on the network); a delivery that does not get the
    # claim (a duplicate, a finished job) just drops what it fetched.
    fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="download")
    downloading = fetcher.submit(_timed_download, worker, item)
    fetcher.shutdown(wait=False)
    result = lifecycle.claim(item.job_id, message_id=delivery.message_id, attributes={
        "worker": {k: v for k, v in worker.runtime_info.items() if v}, "delivery": delivery.receive_count})
    timings.claim = clock.monotonic() - started
    if result.outcome is not ClaimOutcome.CLAIMED:
        downloading.cancel()
        return _not_claimed(worker, delivery, item, result)
    assert result.claim is not None
    held = Held(delivery=delivery, item=item, claim=result.claim, taken_at=started, timings=timings)
    logger.info("job claimed", extra={"attempt": held.claim.attempt})
    try:
        data, held.input_version, timings.download = downloading.result()
        model = str(item.options.model)
        t0 = clock.monotonic()
        held.prepared = worker.engine.prepare(data, model=model, scale=item.options.scale,
                                              output_format=str(item.output_format), strength=item.options.strength)
        timings.decode = clock.monotonic() - t0
        _ensure_model(worker, model, item.options.scale)
    except Exception as exc:
        conclude_failure(worker, held, exc)
        return Disposition.DONE
    return held


def _not_claimed(worker: Worker, delivery: Delivery, item: WorkItem, result: ClaimResult) -> Disposition:
    lifecycle, clock, outcome, record = worker.lifecycle, worker.clock, result.outcome, result.record
    if outcome is ClaimOutcome.TERMINAL:
        assert record is not None
        try:
            if lifecycle.resume(record):
                logger.info("published the notification a previous attempt stored")
        except NotificationPending:  # being sent elsewhere, or SNS still refuses: look again later
            return settle(worker, delivery, Disposition.RETRY)
        return settle(worker, delivery, Disposition.DONE)
    if outcome is ClaimOutcome.MISSING:
        logger.error("no job record for this item: nothing to run or report")
        return settle(worker, delivery, Disposition.DONE)
    if outcome is ClaimOutcome.CRASHED:
        assert record is not None
        return settle(worker, delivery, _fail_crashed(worker, item, record))
    if outcome is ClaimOutcome.HELD and result.held_by_another_message(delivery.message_id):
        # A second copy of the item (a give-back's fresh copy, a re-drive, SQS's at-least-once delivery) while a
        # live worker holds the job with another: that copy stays until the job is done; drop this one.
        logger.info("a duplicate copy of an item another worker holds; dropped")
        return settle(worker, delivery, Disposition.DONE)
    # This very message came back while its claim still runs (a renewal was late), or intake has not finished
    # queueing: look again when that lease would have run out. Receives no longer decide anything.
    wait = max(1, int(result.seconds_held(clock.wall()) + 1)) if outcome is ClaimOutcome.HELD else 5
    logger.info("job held; looking again later", extra={"outcome": str(outcome), "seconds": wait})
    try:
        worker.queue.hide(delivery, wait)
    except (ClientError, BotoCoreError):
        logger.warning("could not hide the held item; it comes back after its visibility timeout", exc_info=True)
    return Disposition.RETRY


def _fail_crashed(worker: Worker, item: WorkItem, record: JobRecord) -> Disposition:
    finish = fail_crashed(worker.lifecycle, item, record, worker.clock.now())
    if finish.won:
        logger.error("job failed: it kept stopping its worker", extra={"crashes": record.number("crashes")})
    # Lost: another delivery took the job over or ended it meanwhile; this copy is not needed either way.
    return Disposition.RETRY if finish.won and not finish.sent else Disposition.DONE


def process_delivery(worker: Worker, delivery: Delivery) -> Disposition:
    """One delivery start to finish, one step after another (tests; the loop runs the same steps as a pipeline)."""
    taken = take(worker, delivery)
    if not isinstance(taken, Held):
        return taken
    try:
        upscale(worker, taken)
    except JobInterrupted as exc:
        return give_back(worker, taken, reason=str(exc))
    except Exception as exc:
        return conclude_failure(worker, taken, exc)
    return complete(worker, taken)


def upscale(worker: Worker, held: Held) -> None:
    """The GPU stage: mark the attempt as started (dying now is a crash), run the network, unmark it.
    Raises JobInterrupted (SIGTERM) or the engine's error; the caller hands either to `give_back` /
    `conclude_failure`."""
    clock, item = worker.clock, held.item
    with _item_logging(item.job_id, held.delivery):
        if worker.stop.requested.is_set():
            raise JobInterrupted("stop requested before inference")
        if not worker.lifecycle.start_inference(held.claim):
            raise ClaimLostError("the claim was lost before inference")
        held.timings.wait = clock.monotonic() - held.taken_at - sum(
            t or 0.0 for t in (held.timings.claim, held.timings.download, held.timings.decode))
        logger.info("inference started", extra={"model": str(item.options.model), "scale": item.options.scale})
        t0 = clock.monotonic()
        worker.stop.busy = True  # only inference is interrupted by SIGTERM: the claim is known and released
        try:
            held.inferred = worker.engine.infer(held.prepared, tile_size=worker.settings.tile_size,
                                                progress=_ProgressLog(clock))
        finally:
            worker.stop.busy = False
        held.prepared = None
        held.timings.inference = clock.monotonic() - t0
        # Before the next image's forward: a death from here on is not this image's doing (most likely)
        try:
            ended = worker.lifecycle.end_inference(held.claim)
        except (ClientError, BotoCoreError):  # the mark stays: at worst this image counts a crash it did not cause
            logger.warning("could not mark the end of inference", exc_info=True)
            ended = True
        if not ended:
            raise ClaimLostError("the claim was lost during inference")


def complete(worker: Worker, held: Held) -> Disposition:
    """Encode, write the output (unless a newer upload of the key owns it), make the terminal write and
    publish; then settle the message. Any failure is concluded here too."""
    with _item_logging(held.job_id, held.delivery), critical_section():
        try:
            return _complete(worker, held)
        except Exception as exc:
            return conclude_failure(worker, held, exc)


def _complete(worker: Worker, held: Held) -> Disposition:
    settings, clock, item, timings = worker.settings, worker.clock, held.item, held.timings
    fmt = str(item.output_format)
    t0 = clock.monotonic()
    result = worker.engine.encode(held.inferred, quality={"jpeg": settings.jpeg_quality,
                                                          "webp": settings.webp_quality}.get(fmt))
    held.inferred = None
    timings.encode = clock.monotonic() - t0
    logger.info("upscaled", extra={"input": f"{result.input_width}x{result.input_height}",
                                   "output": f"{result.output_width}x{result.output_height}",
                                   "format": result.format, "inference_seconds": _r(timings.inference),
                                   "encode_seconds": _r(timings.encode), "warnings": list(result.warnings)})
    t0 = clock.monotonic()
    placed = place_output(worker.s3, item, data=result.data, content_type=result.content_type, metadata={
        "job-id": item.job_id, "source-bucket": item.input_bucket, "source-version": held.input_version,
        "model": result.model, "scale": result.scale, "strength": item.options.strength,
        "input-width": result.input_width, "input-height": result.input_height,
        "output-width": result.output_width, "output-height": result.output_height, "provider": result.provider})
    timings.upload = clock.monotonic() - t0
    if isinstance(placed, Superseded):
        return settle(worker, held.delivery, _finish_superseded(worker, held, placed))
    return settle(worker, held.delivery, _finish_succeeded(worker, held, result, placed))


def _finish_succeeded(worker: Worker, held: Held, result: UpscaleResult, placed: Placed) -> Disposition:
    clock, item, timings = worker.clock, held.item, held.timings
    t0 = clock.monotonic()
    link = presign_get(worker.s3, bucket=item.output_bucket, key=item.output_key, version=placed.version,
                       expires_in=worker.settings.presigned_url_expiry_seconds, now=clock.now())
    timings.item = clock.monotonic() - held.taken_at
    timings.total = (timings.queued or 0.0) + timings.item
    notification = Notification(
        event_type=EventType.SUCCEEDED, job_id=item.job_id,
        input=ImageInfo(item.input_bucket, item.input_key, result.input_width, result.input_height,
                        item.input_format),
        output=ImageInfo(item.output_bucket, item.output_key, result.output_width, result.output_height,
                         result.format),
        presigned_url=link.url, presigned_url_expires_at=_iso(link.expires_at),
        model=result.model, scale=result.scale, strength=item.options.strength, durations=timings.durations(),
        warnings=tuple(item.warnings) + tuple(result.warnings) + tuple(w for w in [link.warning()] if w),
    )
    finish = worker.lifecycle.finish(notification, JobState.SUCCEEDED, holder=Holder.CLAIM, claim=held.claim,
                                     attributes={
        "output_bucket": item.output_bucket, "output_key": item.output_key, "output_version": placed.version,
        "output_format": result.format, "output_bytes": len(result.data), "input_width": result.input_width,
        "input_height": result.input_height, "output_width": result.output_width,
        "output_height": result.output_height, "provider": result.provider, "durations": timings.as_record(),
    })
    timings.finish = clock.monotonic() - t0
    if not finish.won:
        return _claim_lost(worker, item)
    logger.info("job succeeded", extra={"durations": timings.as_record(), "notified": finish.sent})
    return Disposition.DONE if finish.sent else Disposition.RETRY


def _finish_superseded(worker: Worker, held: Held, placed: Superseded) -> Disposition:
    item = held.item
    message = (f"A newer upload of {item.input_key} replaced this one before its result was written; the newer "
               f"upload's result is at s3://{item.output_bucket}/{placed.newer_key}.")
    held.timings.item = worker.clock.monotonic() - held.taken_at
    held.timings.total = (held.timings.queued or 0.0) + held.timings.item
    notification = Notification(
        event_type=EventType.SUPERSEDED, job_id=item.job_id,
        input=ImageInfo(item.input_bucket, item.input_key, item.input_width, item.input_height, item.input_format),
        model=str(item.options.model), scale=item.options.scale, strength=item.options.strength,
        durations=held.timings.durations(), error=ErrorInfo(code="SUPERSEDED", message=message, retryable=False))
    finish = worker.lifecycle.finish(notification, JobState.SUPERSEDED, holder=Holder.CLAIM, claim=held.claim,
                                     attributes={"error_code": "SUPERSEDED", "error_message": message,
                                                 "superseded_by_output": placed.newer_key})
    if not finish.won:
        return _claim_lost(worker, item)
    logger.info("job superseded by a newer upload of its key", extra={"newer_output": placed.newer_key})
    return Disposition.DONE if finish.sent else Disposition.RETRY


def conclude_failure(worker: Worker, held: Held, exc: BaseException) -> Disposition:
    """An attempt that raised: give it back for another try (transient, attempts left), or end it FAILED."""
    if isinstance(exc, JobInterrupted):
        return give_back(worker, held, reason=str(exc))
    if isinstance(exc, ClaimLostError):
        return settle(worker, held.delivery, _claim_lost(worker, held.item))
    failure = classify(exc)
    last = held.claim.failed_before + 1 >= worker.settings.max_attempts
    with critical_section():
        if failure.retryable and not last:
            logger.warning("transient failure; the item comes back", extra={
                "error_code": str(failure.code), "error": failure.message}, exc_info=exc)
            if worker.lifecycle.release(held.claim, failed=True):
                return settle(worker, held.delivery, Disposition.RELEASED,
                              delay=retry_delay(held.claim.failed_before + 1))
            return settle(worker, held.delivery, _claim_lost(worker, held.item))
        logger.error("job failed", extra={"error_code": str(failure.code), "error": failure.message}, exc_info=exc)
        held.timings.item = worker.clock.monotonic() - held.taken_at
        return settle(worker, held.delivery, _finish_failed(worker, held, failure))


def give_back(worker: Worker, held: Held, *, reason: str) -> Disposition:
    """Hand the item back untouched (SIGTERM, the worker stopping with it prefetched): no attempt is spent."""
    with _item_logging(held.job_id, held.delivery), critical_section():
        logger.warning("giving the item back", extra={"reason": reason})
        try:
            released = worker.lifecycle.release(held.claim)
        except (ClientError, BotoCoreError):
            logger.warning("could not release the claim; it lapses instead", exc_info=True)
            return Disposition.RETRY
        if not released:
            return settle(worker, held.delivery, _claim_lost(worker, held.item))
        return settle(worker, held.delivery, Disposition.RELEASED)


def _finish_failed(worker: Worker, held: Held, failure: Failure) -> Disposition:
    item = held.item
    notification = Notification(
        event_type=EventType.FAILED, job_id=item.job_id,
        input=ImageInfo(item.input_bucket, item.input_key, item.input_width, item.input_height, item.input_format),
        model=str(item.options.model), scale=item.options.scale, strength=item.options.strength,
        durations=held.timings.durations(),
        error=ErrorInfo(code=str(failure.code), message=failure.message[:1000], retryable=failure.retryable),
    )
    finish = worker.lifecycle.finish(notification, JobState.FAILED, holder=Holder.CLAIM, claim=held.claim,
                                     attributes={"error_code": str(failure.code),
                                                 "error_message": failure.message[:1000],
                                                 "durations": held.timings.as_record()})
    if not finish.won:
        return _claim_lost(worker, item)
    return Disposition.DONE if finish.sent else Disposition.RETRY


def _claim_lost(worker: Worker, item: WorkItem) -> Disposition:
    """The claim was lost while this worker ran (it ran past its lease and another delivery took the job over,
    or the job was finished elsewhere). Its message is left alone unless the job is done: the holder's delivery
    may be this very message."""
    record = worker.lifecycle.store.get(item.job_id)
    logger.warning("the claim was lost while this worker ran; its holder speaks for the job",
                   extra={"state": str(record.state) if record else None})
    return Disposition.DONE if record is None or record.state.is_terminal else Disposition.RETRY


def settle(worker: Worker, delivery: Delivery, disposition: Disposition, *, delay: int = 0) -> Disposition:
    """Do to the message what `disposition` says. A failure here loses nothing: the message comes back after its
    visibility timeout and the job record tells that delivery what is left."""
    try:
        if disposition is Disposition.DONE:
            worker.queue.delete(delivery)
        elif disposition is Disposition.RELEASED:
            worker.queue.give_back(delivery, delay_seconds=delay)
    except (ClientError, BotoCoreError):
        logger.warning("could not settle the item's message", extra={"disposition": str(disposition)},
                       exc_info=True)
    return disposition


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


def retry_delay(failures: int) -> int:
    """Back off before the next delivery of an item that failed for a transient reason."""
    return min(300, 5 * 2 ** max(0, failures - 1))


class ClaimLostError(Exception):
    """The claim was taken over before this attempt could use it."""


def _ensure_model(worker: Worker, model: str, scale: float) -> None:
    """Load the network for this scale once per process (before the GPU stage, so loading never waits on it)."""
    with worker.lock:
        if model in worker.models_loaded:
            return
        t0 = worker.clock.monotonic()
        worker.engine.preload(model, scale=scale)
        worker.models_loaded.add(model)
    logger.info("model loaded", extra={"model": model, "seconds": _r(worker.clock.monotonic() - t0),
                                       "provider": worker.engine.provider(model)})


def _timed_download(worker: Worker, item: WorkItem) -> tuple[bytes, str | None, float]:
    t0 = worker.clock.monotonic()
    data, version = download_input(worker.s3, item)
    return data, version, worker.clock.monotonic() - t0


@contextlib.contextmanager
def _item_logging(job_id: str, delivery: Delivery) -> Iterator[None]:
    """Log lines of this thread carry the item's job id and receive count."""
    logger.thread_safe_append_keys(job_id=job_id, delivery=delivery.receive_count)
    try:
        yield
    finally:
        logger.thread_safe_remove_keys(_ITEM_KEYS)


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

