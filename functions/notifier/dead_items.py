"""A work item in the work DLQ: settle it, never drop it.

SQS moves an item to the work DLQ after `max_receives` receives, a backstop that counts give-backs, held
duplicates and redeliveries as well as deaths (ApproximateReceiveCount counts every receive), so an item
there is not necessarily a failure. Its job record decides (common.lifecycle counts real attempts):
  terminal                    -> its notification sent if it was not yet; the message deleted
  attempts spent (crashes)    -> FAILED (WORKER_CRASHED) and its one upscale.failed; deleted
  QUEUED, or its worker died  -> a fresh copy back on the work queue; deleted
  a live worker holds it, or intake still owns it -> left in the DLQ (raised: delivered again later)
A message is deleted only once its job is settled, so nothing is stranded here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from common.abandoned import fail_crashed
from common.contract import JobState, WorkItem, WorkItemError
from common.lifecycle import JobLifecycle, NotificationPending


class ItemNotSettled(RuntimeError):
    """The item's job is still in someone's hands: keep the DLQ message and look again later."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the handler did with one dead item (logged and returned for tests)."""

    action: str  # "ignored" | "unknown_job" | "already_terminal" | "delivered_stored" | "marked_failed" | "redriven"
    job_id: str | None = None
    reason: str = ""


def settle_dead_item(body: str, *, lifecycle: JobLifecycle, send: Callable[[WorkItem], object],
                     now: datetime | None = None) -> Outcome:
    """Settle one dead item (see the module docstring). Raises ItemNotSettled or NotificationPending to keep it."""
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
    if record.state in (JobState.ACCEPTED, JobState.AWAITING_UPLOAD):
        raise ItemNotSettled(f"job {item.job_id} is still {record.state}: intake owns it")
    if lifecycle.crashed_out(record):
        finish = fail_crashed(lifecycle, item, record, now or datetime.now(UTC))
        if finish.won and not finish.sent:
            raise NotificationPending(f"the notification of job {item.job_id} is stored but not yet sent")
        if not finish.won:
            raise ItemNotSettled(f"job {item.job_id} changed while it was being failed; looking again")
        return Outcome("marked_failed", item.job_id, "its attempts kept stopping their worker")
    if lifecycle.redrive(record, send):
        return Outcome("redriven", item.job_id, f"job is {record.state}: a fresh copy is back on the work queue")
    raise ItemNotSettled(f"a live worker holds job {item.job_id}; looking again later")
