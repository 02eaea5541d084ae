"""Ending jobs that no attempt can finish, with the one notification that says why.

The worker (a delivery that finds the crash budget spent), the notifier (an item in the work DLQ) and the
sweeper (a record past its bound) all end such jobs the same way, through common.lifecycle's conditional
terminal write: only from the exact state they observed, so a live worker's job is never failed.
"""

from __future__ import annotations

from datetime import datetime

from common.contract import (
    Durations,
    ErrorInfo,
    EventType,
    FailureCode,
    ImageInfo,
    JobState,
    Notification,
    WorkItem,
    seconds_since,
)
from common.jobs import JobRecord
from common.lifecycle import CRASHES, LOST, Finish, Holder, JobLifecycle


def fail_crashed(lifecycle: JobLifecycle, item: WorkItem, record: JobRecord, now: datetime) -> Finish:
    """The job's attempts kept dying with it (common.lifecycle counts them): FAILED, WORKER_CRASHED."""
    stops = int(record.number(CRASHES)) + int(record.number(LOST)) + 1
    message = (f"The image stopped its worker {stops} time(s) before it could finish (out of memory, a crash, "
               "or the GPU host went away), so it is not tried again. The upload is unchanged.")
    return _fail(lifecycle, item, record, now, FailureCode.WORKER_CRASHED, message, retryable=False)


def fail_timed_out(lifecycle: JobLifecycle, item: WorkItem, record: JobRecord, now: datetime) -> Finish:
    """Past its deadline without a worker finishing it (no GPU capacity for that long): FAILED, TIMED_OUT."""
    hours = lifecycle.policy.job_deadline_seconds / 3600
    message = (f"No GPU worker could finish the image within {hours:g} hours of its upload (no GPU capacity was "
               "available, or the account's GPU quota is exhausted), so it is not tried again. The upload is "
               "unchanged: upload it again to retry.")
    return _fail(lifecycle, item, record, now, FailureCode.TIMED_OUT, message, retryable=True)


def fail_upload_never_arrived(lifecycle: JobLifecycle, record: JobRecord) -> Finish:
    """A job the HTTP API created whose upload never came before its link expired: FAILED, INPUT_MISSING."""
    message = "The upload never arrived before its upload link expired, so there is nothing to upscale."
    options = record.options
    notification = Notification(
        event_type=EventType.FAILED, job_id=record.job_id, input=ImageInfo(record.input_bucket, record.input_key),
        model=str(options.model), scale=options.scale, strength=options.strength,
        error=ErrorInfo(code=str(FailureCode.INPUT_MISSING), message=message, retryable=False))
    return lifecycle.finish(notification, JobState.FAILED, holder=Holder.ABANDONED, observed=record,
                            attributes={"error_code": str(FailureCode.INPUT_MISSING), "error_message": message})


def fail_intake_gave_up(lifecycle: JobLifecycle, record: JobRecord, attempts: int) -> Finish:
    """An upload whose intake kept failing (its S3 event re-driven `attempts` times): FAILED, INTERNAL_ERROR."""
    message = (f"The upload could not be checked after {attempts} tries (an internal error), so it is not "
               "processed. The upload is unchanged: upload it again to retry.")
    options = record.options
    notification = Notification(
        event_type=EventType.FAILED, job_id=record.job_id, input=ImageInfo(record.input_bucket, record.input_key),
        model=str(options.model), scale=options.scale, strength=options.strength,
        error=ErrorInfo(code=str(FailureCode.INTERNAL_ERROR), message=message, retryable=True))
    return lifecycle.finish(notification, JobState.FAILED, holder=Holder.INTAKE,
                            attributes={"error_code": str(FailureCode.INTERNAL_ERROR), "error_message": message})


def _fail(lifecycle: JobLifecycle, item: WorkItem, record: JobRecord, now: datetime, code: FailureCode,
          message: str, *, retryable: bool) -> Finish:
    notification = Notification(
        event_type=EventType.FAILED, job_id=item.job_id,
        input=ImageInfo(item.input_bucket, item.input_key, item.input_width, item.input_height, item.input_format),
        model=str(item.options.model), scale=item.options.scale, strength=item.options.strength,
        durations=Durations(total=seconds_since(item.enqueued_at, now)),
        error=ErrorInfo(code=str(code), message=message, retryable=retryable),
    )
    return lifecycle.finish(notification, JobState.FAILED, holder=Holder.ABANDONED, observed=record,
                            attributes={"error_code": str(code), "error_message": message})
