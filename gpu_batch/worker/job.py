"""One job, start to finish: claim it, download, upscale, upload, record the result, notify.

`run_job` is a plain function of its collaborators (engine, S3 client, job store, notifier,
clock) so tests drive it in-process; `python -m gpu_batch.worker` builds the real ones.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, Protocol

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from common.contract import (
    EXIT_OK,
    EXIT_PERMANENT_FAILURE,
    EXIT_RETRYABLE,
    Durations,
    ErrorInfo,
    EventType,
    FailureCode,
    ImageInfo,
    JobParameters,
    JobState,
    Notification,
    OutputFormat,
)
from common.jobs import JobStore
from common.notify import (
    Notifier,
    deliver_pending,
    has_pending_notification,
    mark_sent,
    outbox_attributes,
)
from common.settings import Settings
from gpu_batch.engine import EngineError, EngineOutOfMemoryError, UndecodableImageError

from .errors import Failure, InputMissingError, JobInterrupted, classify_storage_error
from .runtime import SystemClock, critical_section
from .storage import download_input, upload_output

logger = Logger(service="upscaler-worker")

# Batch can start the container before intake has recorded SUBMITTED; wait this long for it.
ACCEPTED_WAIT_SECONDS = 30
PUBLISH_ATTEMPTS = 3  # on top of botocore's own retries; after that the stored message waits for a retry

_EXTENSION_FORMATS = {".jpg": OutputFormat.JPEG, ".jpeg": OutputFormat.JPEG, ".png": OutputFormat.PNG,
                      ".webp": OutputFormat.WEBP}


class Clock(Protocol):
    def now(self) -> datetime: ...
    def monotonic(self) -> float: ...


@dataclass(slots=True)
class Timings:
    """Seconds per phase of this attempt (None where a phase did not run)."""

    queued: float | None = None
    model_load: float | None = None
    download: float | None = None
    inference: float | None = None
    upload: float | None = None
    total: float | None = None
    claim: float | None = None  # the conditional RUNNING write (and any wait for SUBMITTED)
    record: float | None = None  # the conditional terminal write
    publish: float | None = None  # presigning and the SNS publish

    def durations(self) -> Durations:
        return Durations(queued=_r(self.queued), download=_r(self.download), inference=_r(self.inference),
                         upload=_r(self.upload), total=_r(self.total))

    def as_record(self) -> dict[str, float]:
        return {k: _r(v) for k, v in (("queued", self.queued), ("model_load", self.model_load),
                                      ("download", self.download), ("inference", self.inference),
                                      ("upload", self.upload), ("total", self.total), ("claim", self.claim),
                                      ("record", self.record), ("publish", self.publish)) if v is not None}


@dataclass(slots=True)
class _Progress:
    """What is known so far, for the notification whichever way the job ends."""

    timings: Timings = field(default_factory=Timings)
    input_width: int | None = None
    input_height: int | None = None
    input_format: str | None = None
    provider: str | None = None


def run_job(params: JobParameters, *, settings: Settings, engine: Any, s3: Any, store: JobStore,
            notifier: Notifier, clock: Clock | None = None, attempt: int = 1,
            runtime_info: Mapping[str, Any] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> int:
    """Run one attempt of one job and return the process exit code for AWS Batch."""
    clock = clock or SystemClock()
    logger.append_keys(job_id=params.job_id, attempt=attempt, **dict(runtime_info or {}))
    started_at, started = clock.now(), clock.monotonic()
    last_attempt = attempt >= settings.job_attempts
    progress = _Progress()
    progress.timings.queued = _seconds_since(params.submitted_at, started_at)

    claimed = _claim(params.job_id, store, notifier, attempt=attempt, runtime_info=runtime_info or {},
                     sleep=sleep)
    progress.timings.claim = clock.monotonic() - started
    if claimed is not None:
        return claimed

    try:
        result, output_version = _process(params, settings=settings, engine=engine, s3=s3, clock=clock,
                                          progress=progress)
    except JobInterrupted as exc:
        logger.warning("interrupted; leaving the job RUNNING for Batch to retry or the notifier to close",
                       extra={"reason": str(exc)})
        return EXIT_RETRYABLE
    except Exception as exc:
        failure = classify(exc)
        progress.timings.total = _total(progress.timings, clock.monotonic() - started)
        if failure.retryable and not last_attempt:
            logger.warning("transient failure; Batch will retry",
                           extra={"error_code": str(failure.code), "error": failure.message}, exc_info=exc)
            return EXIT_RETRYABLE
        logger.error("job failed", extra={"error_code": str(failure.code), "error": failure.message,
                                          "last_attempt": last_attempt}, exc_info=exc)
        with critical_section():
            return _finish_failed(params, failure, store=store, notifier=notifier, progress=progress, sleep=sleep)

    progress.timings.total = _total(progress.timings, clock.monotonic() - started)
    with critical_section():
        return _finish_succeeded(params, result, output_version, settings=settings, s3=s3, store=store,
                                 notifier=notifier, clock=clock, progress=progress, last_attempt=last_attempt,
                                 sleep=sleep)


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


def output_format_for(params: JobParameters, settings: Settings) -> str | None:
    """The format asked for, else the default, else what intake chose for the output key's extension."""
    if params.options.output_format:
        return str(params.options.output_format)
    if settings.default_output_format:
        return settings.default_output_format
    fmt = _EXTENSION_FORMATS.get(PurePosixPath(params.output_key).suffix.lower())
    return str(fmt) if fmt else None


def _claim(job_id: str, store: JobStore, notifier: Notifier, *, attempt: int, runtime_info: Mapping[str, Any],
           sleep: Callable[[float], None]) -> int | None:
    """Move the job to RUNNING. None if this attempt owns it, else the exit code to stop with."""
    attributes = {"attempt": attempt, **{k: v for k, v in runtime_info.items() if v is not None}}
    for _ in range(ACCEPTED_WAIT_SECONDS + 1):
        if store.transition(job_id, JobState.RUNNING, attributes=attributes):
            logger.info("job running")
            return None
        record = store.get(job_id)
        if record is None:
            logger.error("no job record: nothing to run or to report")
            return EXIT_PERMANENT_FAILURE
        if record.state.is_terminal:
            if has_pending_notification(record):
                return _deliver_stored(record, store=store, notifier=notifier)
            logger.info("job already finished; nothing to do", extra={"state": str(record.state)})
            return EXIT_OK
        if record.state is JobState.ACCEPTED:
            sleep(1.0)  # intake records SUBMITTED right after submit_job returns
    logger.warning("job still not SUBMITTED; retrying later")
    return EXIT_RETRYABLE


def _process(params: JobParameters, *, settings: Settings, engine: Any, s3: Any, clock: Clock,
             progress: _Progress) -> tuple[Any, str | None]:
    timings = progress.timings
    model = str(params.options.model)

    def timed_download() -> tuple[bytes, str | None]:
        t0 = clock.monotonic()
        try:
            return download_input(s3, params)
        finally:
            timings.download = clock.monotonic() - t0

    # The download overlaps loading the model: both wait on I/O, not on each other.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="download") as pool:
        pending = pool.submit(timed_download)
        t0 = clock.monotonic()
        engine.preload(model)
        timings.model_load = clock.monotonic() - t0
        progress.provider = engine.provider(model)
        logger.append_keys(provider=progress.provider)
        data, input_version = pending.result()
    logger.info("input downloaded", extra={"bytes": len(data), "input_version": input_version,
                                           "download_seconds": _r(timings.download),
                                           "model_load_seconds": _r(timings.model_load)})
    progress.input_format = _sniff_format(data)

    fmt = output_format_for(params, settings)
    quality = {"jpeg": settings.jpeg_quality, "webp": settings.webp_quality}.get(fmt or "")
    t0 = clock.monotonic()
    result = engine.upscale_bytes(data, model=model, scale=params.options.scale, output_format=fmt,
                                  quality=quality, tile_size=settings.tile_size,
                                  progress=_ProgressLog(clock))
    timings.inference = clock.monotonic() - t0
    progress.input_width, progress.input_height = result.input_width, result.input_height
    logger.info("upscaled", extra={"input": f"{result.input_width}x{result.input_height}",
                                   "output": f"{result.output_width}x{result.output_height}",
                                   "format": result.format, "provider": result.provider,
                                   "decode_seconds": _r(result.decode_seconds),
                                   "inference_seconds": _r(result.inference_seconds),
                                   "encode_seconds": _r(result.encode_seconds),
                                   "warnings": list(result.warnings)})

    t0 = clock.monotonic()
    output_version = upload_output(
        s3, bucket=params.output_bucket, key=params.output_key, data=result.data,
        content_type=result.content_type,
        metadata={
            "job-id": params.job_id,
            "source-bucket": params.input_bucket,
            "source-key": params.input_key,
            "source-version": input_version,
            "model": result.model,
            "scale": result.scale,
            "input-width": result.input_width,
            "input-height": result.input_height,
            "output-width": result.output_width,
            "output-height": result.output_height,
            "provider": result.provider,
            "download-seconds": _r(timings.download),
            "inference-seconds": _r(timings.inference),
        },
    )
    timings.upload = clock.monotonic() - t0
    logger.info("output uploaded", extra={"output_uri": params.output_uri, "bytes": len(result.data),
                                          "upload_seconds": _r(timings.upload)})
    return result, output_version


def _finish_succeeded(params: JobParameters, result: Any, output_version: str | None, *, settings: Settings,
                      s3: Any, store: JobStore, notifier: Notifier, clock: Clock, progress: _Progress,
                      last_attempt: bool, sleep: Callable[[float], None]) -> int:
    timings = progress.timings
    t0 = clock.monotonic()
    url, expires_at = presign_output(s3, params.output_bucket, params.output_key, output_version,
                                     expires_in=settings.presigned_url_expiry_seconds, now=clock.now())
    notification = Notification(
        event_type=EventType.SUCCEEDED,
        job_id=params.job_id,
        input=ImageInfo(params.input_bucket, params.input_key, result.input_width, result.input_height,
                        progress.input_format),
        output=ImageInfo(params.output_bucket, params.output_key, result.output_width, result.output_height,
                         result.format),
        presigned_url=url,
        presigned_url_expires_at=_iso(expires_at),
        model=result.model,
        scale=result.scale,
        durations=timings.durations(),
        warnings=_intake_warnings(params.job_id, store) + tuple(result.warnings),
    )
    try:
        won = store.transition(params.job_id, JobState.SUCCEEDED, attributes={
            **outbox_attributes(notification),
            "output_bucket": params.output_bucket,
            "output_key": params.output_key,
            "output_version": output_version,
            "output_format": result.format,
            "output_bytes": len(result.data),
            "input_width": result.input_width,
            "input_height": result.input_height,
            "output_width": result.output_width,
            "output_height": result.output_height,
            "provider": result.provider,
            "durations": timings.as_record(),
        })
    except (ClientError, BotoCoreError) as exc:
        failure = classify_storage_error(exc, action="recording success")
        logger.error("could not record success", extra={"error": failure.message}, exc_info=exc)
        # The output is in place; another attempt redoes the job and writes it again.
        return EXIT_RETRYABLE if failure.retryable and not last_attempt else 1
    timings.record = clock.monotonic() - t0
    if not won:
        logger.warning("job became terminal elsewhere while running; not notifying")
        return EXIT_OK

    t0 = clock.monotonic()
    sent = _publish(notification, notifier=notifier, store=store, sleep=sleep)
    timings.publish = clock.monotonic() - t0
    logger.info("job succeeded", extra={"durations": timings.as_record()})
    # Unsent, the message waits on the record: a Batch retry, or the notifier Lambda once retries run
    # out (the job then ends FAILED in Batch), finds it there and publishes it.
    return EXIT_OK if sent else EXIT_RETRYABLE


def _intake_warnings(job_id: str, store: JobStore) -> tuple[str, ...]:
    """Warnings intake stored on the record (e.g. only the first frame of an animation is upscaled)."""
    try:
        record = store.get(job_id)
    except (ClientError, BotoCoreError):
        logger.warning("could not read intake warnings; publishing without them", exc_info=True)
        return ()
    return tuple(str(w) for w in (record.attributes.get("intake_warnings") or ())) if record else ()


def _finish_failed(params: JobParameters, failure: Failure, *, store: JobStore, notifier: Notifier,
                   progress: _Progress, sleep: Callable[[float], None]) -> int:
    notification = Notification(
        event_type=EventType.FAILED,
        job_id=params.job_id,
        input=ImageInfo(params.input_bucket, params.input_key, progress.input_width, progress.input_height,
                        progress.input_format),
        model=str(params.options.model),
        scale=params.options.scale,
        durations=progress.timings.durations(),
        error=ErrorInfo(code=str(failure.code), message=failure.message[:1000], retryable=failure.retryable),
    )
    won = store.transition(params.job_id, JobState.FAILED, attributes={
        **outbox_attributes(notification),
        "error_code": str(failure.code),
        "error_message": failure.message[:1000],
        "durations": progress.timings.as_record(),
    })
    if not won:
        logger.warning("job already terminal; not notifying")
        return EXIT_PERMANENT_FAILURE
    sent = _publish(notification, notifier=notifier, store=store, sleep=sleep)
    return EXIT_PERMANENT_FAILURE if sent else EXIT_RETRYABLE


def _publish(notification: Notification, *, notifier: Notifier, store: JobStore,
             sleep: Callable[[float], None]) -> bool:
    """Publish the terminal notification this process stored with its winning write; True once SNS has it."""
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            message_id = notifier.publish(notification)
        except (ClientError, BotoCoreError) as exc:
            if attempt == PUBLISH_ATTEMPTS:
                logger.error("could not publish the notification; it stays on the job record for a retry",
                             exc_info=exc)
                return False
            sleep(2.0 * attempt)
            continue
        logger.info("notification published", extra={"event_type": str(notification.event_type),
                                                      "message_id": message_id})
        try:
            mark_sent(store, notification.job_id, message_id)
        except (ClientError, BotoCoreError):
            logger.warning("could not mark the notification sent; a retry may send it once more")
        return True
    return False


def _deliver_stored(record: Any, *, store: JobStore, notifier: Notifier) -> int:
    """A previous attempt made the job terminal but could not publish: publish the stored message."""
    try:
        message_id = deliver_pending(record, notifier=notifier, store=store)
    except (ClientError, BotoCoreError) as exc:
        logger.error("stored notification still not published", exc_info=exc)
        return EXIT_RETRYABLE
    logger.info("published the notification a previous attempt stored", extra={"message_id": message_id})
    return EXIT_OK


def presign_output(s3: Any, bucket: str, key: str, version: str | None, *, expires_in: int,
                   now: datetime) -> tuple[str, datetime]:
    """A GET URL for the output (pinned to its version) and when it stops working.

    A URL signed with temporary credentials (the Batch job role) dies with them, so the expiry
    reported is the earlier of the requested one and the credentials' own expiry.
    """
    params = {"Bucket": bucket, "Key": key}
    if version:
        params["VersionId"] = version
    url = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)
    expires_at = now + timedelta(seconds=expires_in)
    credential_expiry = _credential_expiry(s3)
    if credential_expiry is not None and credential_expiry < expires_at:
        logger.warning("presigned URL lives only as long as the job role's credentials",
                       extra={"credential_expiry": _iso(credential_expiry)})
        expires_at = credential_expiry
    return url, expires_at


def _credential_expiry(s3: Any) -> datetime | None:
    credentials = getattr(getattr(s3, "_request_signer", None), "_credentials", None)
    expiry = getattr(credentials, "_expiry_time", None)  # RefreshableCredentials only
    return expiry if isinstance(expiry, datetime) else None


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


def _sniff_format(data: bytes) -> str | None:
    """The input's format from its header (no decode), for the notification."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return (img.format or "").lower() or None
    except Exception:
        return None


def _seconds_since(iso: str, now: datetime) -> float | None:
    if not iso:
        return None
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (now - then).total_seconds()) if then.tzinfo else None


def _total(timings: Timings, worker_seconds: float) -> float:
    """End to end: time queued plus this attempt's time in the worker."""
    return (timings.queued or 0.0) + worker_seconds


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
