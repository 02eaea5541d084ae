"""A work item in the work DLQ -> the job's FAILED record and its one upscale.failed notification.

An item reaches the DLQ after `max_attempts` deliveries that never finished: each time its worker
died with it (an OOM kill, a segfault, a lost host) or gave it back. The worker reports every failure
it survives itself; this covers the ones it cannot. The terminal write is allowed only while no live
worker holds the job (common.lifecycle, Holder.ABANDONED), so a duplicate delivery that ended here
never fails a job another worker is finishing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

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
from common.lifecycle import Holder, JobLifecycle, NotificationPending


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the handler did with one dead item (logged and returned for tests)."""

    action: str  # "ignored" | "unknown_job" | "already_terminal" | "delivered_stored" | "held" | "marked_failed"
    job_id: str | None = None
    reason: str = ""


def fail_dead_item(body: str, *, lifecycle: JobLifecycle, now: datetime | None = None) -> Outcome:
    """Mark the item's job FAILED and publish upscale.failed, unless it is terminal or a live worker holds it.

    Raises NotificationPending when the job is terminal but its notification could not be sent (yet):
    the DLQ message is then delivered again and the next try sends it."""
    try:
        item = WorkItem.from_json(body)
    except WorkItemError as exc:
        return Outcome("ignored", reason=f"not a work item: {exc}")
    record = lifecycle.store.get(item.job_id)
    if record is None:
        return Outcome("unknown_job", item.job_id, "no job record (expired or never written)")
    if record.state.is_terminal:
        sent = lifecycle.resume(record)
        return Outcome("delivered_stored" if sent else "already_terminal", item.job_id, f"job is {record.state}")
    if record.state is JobState.ACCEPTED:
        return Outcome("ignored", item.job_id, "job is still ACCEPTED: intake owns it")

    attempts = int(record.number("attempts"))
    message = (f"The image stopped its worker {attempts} time(s) before it could finish (out of memory, a crash, "
               "or the GPU host went away), so it is not tried again. The upload is unchanged.")
    notification = Notification(
        event_type=EventType.FAILED, job_id=item.job_id,
        input=ImageInfo(item.input_bucket, item.input_key, item.input_width, item.input_height, item.input_format),
        model=str(item.options.model), scale=item.options.scale,
        durations=Durations(total=seconds_since(item.enqueued_at, now or datetime.now(UTC))),
        error=ErrorInfo(code=str(FailureCode.WORKER_CRASHED), message=message, retryable=False),
    )
    finish = lifecycle.finish(notification, JobState.FAILED, holder=Holder.ABANDONED, attributes={
        "error_code": str(FailureCode.WORKER_CRASHED), "error_message": message, "failed_by": "notifier"})
    if not finish.won:
        return Outcome("held", item.job_id, "a live worker holds the job (this was a duplicate delivery), "
                                            "or it became terminal meanwhile")
    if not finish.sent:
        raise NotificationPending(f"the notification of job {item.job_id} is stored but not yet sent")
    return Outcome("marked_failed", item.job_id, message)
