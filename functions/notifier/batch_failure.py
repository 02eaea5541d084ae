"""A Batch job FAILED event -> the job's FAILED record and its one upscale.failed notification.

The worker reports its own failures; this covers the ones it cannot: spot reclaim, a failed image
pull, the attempt timeout, an OOM kill, a crash, retries exhausted. The conditional FAILED write
decides who speaks: if the worker (or anyone) already made the job terminal, nothing is sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.contract import (
    ENV_JOB_ID,
    EXIT_PERMANENT_FAILURE,
    EXIT_RETRYABLE,
    Durations,
    ErrorInfo,
    EventType,
    FailureCode,
    ImageInfo,
    JobState,
    Notification,
)
from common.jobs import JobStore
from common.notify import Notifier, deliver_pending, outbox_attributes, publish_and_mark
from common.submit import batch_job_name

_JOB_NAME_PREFIX = batch_job_name("")  # "upscale-"
_INFRASTRUCTURE_MARKERS = ("CannotPullContainerError", "CannotStartContainerError", "CannotCreateContainerError",
                           "CannotInspectContainerError", "ResourceInitializationError", "TaskFailedToStart",
                           "DockerTimeoutError", "Host EC2")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the handler did with one event (logged and returned for tests)."""

    action: str  # "ignored" | "already_terminal" | "unknown_job" | "marked_failed" | "delivered_stored"
    job_id: str | None = None
    code: FailureCode | None = None
    reason: str = ""


def job_id_from_detail(detail: Mapping[str, Any]) -> str | None:
    """UPSCALER_JOB_ID from the container environment, else the `upscale-<id>` job name."""
    container = detail.get("container") or {}
    for variable in container.get("environment") or []:
        if variable.get("name") == ENV_JOB_ID and variable.get("value"):
            return str(variable["value"])
    name = str(detail.get("jobName") or "")
    if name.startswith(_JOB_NAME_PREFIX) and len(name) > len(_JOB_NAME_PREFIX):
        return name[len(_JOB_NAME_PREFIX):]
    return None


def classify_batch_failure(detail: Mapping[str, Any]) -> tuple[FailureCode, str]:
    """The failure code and a human-readable reason from Batch's statusReason / container details."""
    container = dict(detail.get("container") or {})
    attempts = detail.get("attempts") or []
    last = attempts[-1] if attempts else {}
    reasons = [str(r) for r in (detail.get("statusReason"), container.get("reason"),
                                (last.get("container") or {}).get("reason"), last.get("statusReason")) if r]
    exit_code = container.get("exitCode", (last.get("container") or {}).get("exitCode"))
    text = " | ".join(dict.fromkeys(reasons)) or "the Batch job failed"

    if any("Job attempt duration exceeded timeout" in r for r in reasons):
        return FailureCode.TIMEOUT, f"the job ran longer than its timeout ({text})"
    if any(marker in r for r in reasons for marker in _INFRASTRUCTURE_MARKERS):
        return FailureCode.INFRASTRUCTURE, f"the GPU host or container could not run the job ({text})"
    if exit_code == 137 or any(re.search(r"OutOfMemory|OOM", r) for r in reasons):
        return FailureCode.WORKER_CRASHED, f"the worker was killed, likely out of memory (exit {exit_code}; {text})"
    if exit_code == EXIT_RETRYABLE:
        return FailureCode.INTERNAL_ERROR, f"transient errors outlasted every attempt ({text})"
    if exit_code == EXIT_PERMANENT_FAILURE:
        # the worker marks FAILED before exiting 2; reaching here means that write did not land
        return FailureCode.INTERNAL_ERROR, f"the worker failed the job ({text})"
    if exit_code is not None:
        return FailureCode.WORKER_CRASHED, f"the worker exited with code {exit_code} ({text})"
    return FailureCode.INTERNAL_ERROR, text


def handle_batch_state_change(event: Mapping[str, Any], *, store: JobStore, notifier: Notifier,
                              now: datetime | None = None) -> Outcome:
    """Mark the job FAILED and publish upscale.failed, only if this call made it terminal."""
    detail = event.get("detail") or {}
    if event.get("detail-type") != "Batch Job State Change" or detail.get("status") != "FAILED":
        return Outcome("ignored", reason="not a Batch job FAILED event")
    job_id = job_id_from_detail(detail)
    if job_id is None:
        return Outcome("ignored", reason="not an upscaler job")

    code, reason = classify_batch_failure(detail)
    record = store.get(job_id)
    if record is None:
        return Outcome("unknown_job", job_id, code, reason)
    if record.state.is_terminal:
        # A previous speaker (the worker, or this function's earlier invocation) made the job terminal
        # but could not publish: its stored message goes out now. Otherwise there is nothing to say.
        if deliver_pending(record, notifier=notifier, store=store):
            return Outcome("delivered_stored", job_id, code, f"job is {record.state}")
        return Outcome("already_terminal", job_id, code, f"job is {record.state}")
    attrs = record.attributes
    options = record.options
    notification = Notification(
        event_type=EventType.FAILED,
        job_id=job_id,
        input=ImageInfo(str(attrs.get("input_bucket") or "unknown"), str(attrs.get("input_key") or "unknown"),
                        _positive(attrs.get("input_width")), _positive(attrs.get("input_height"))),
        model=str(options.model),
        scale=options.scale,
        durations=Durations(total=_seconds_since(attrs.get("created_at"), now or datetime.now(UTC))),
        error=ErrorInfo(code=str(code), message=reason[:1000],
                        retryable=code in (FailureCode.INFRASTRUCTURE, FailureCode.TIMEOUT,
                                           FailureCode.INTERNAL_ERROR)),
    )
    won = store.transition(job_id, JobState.FAILED, attributes={
        **outbox_attributes(notification),
        "error_code": str(code),
        "error_message": reason[:1000],
        "batch_job_id": detail.get("jobId"),
        "failed_by": "notifier",
    })
    if not won:
        # Someone else made it terminal between our read and our write; they speak for it.
        return Outcome("already_terminal", job_id, code, "job became terminal concurrently")
    # A failed publish raises: the invocation is retried and finds the stored message above.
    publish_and_mark(job_id, notification.to_dict(), notifier=notifier, store=store)
    return Outcome("marked_failed", job_id, code, reason)


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _seconds_since(iso: Any, now: datetime) -> float | None:
    if not isinstance(iso, str) or not iso:
        return None
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round(max(0.0, (now - then).total_seconds()), 3)
