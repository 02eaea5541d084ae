"""Nothing waits forever: every open job record past its bound is finished or re-driven.

Each open record (common.lifecycle) carries `sweep_at`, the time by which something should have happened to it;
the sweep index lists those whose time has come. Each is read again (strongly consistent) and, by its state:
  terminal, notification unsent     -> published (resume)
  AWAITING_UPLOAD (HTTP API)        -> FAILED: the upload never arrived
  ACCEPTED, intake's lease over     -> its S3 event sent to intake again (intake's own retries are over: the
                                       event may sit in the intake DLQ); after MAX_INTAKE_REDRIVES, FAILED
  QUEUED, item never marked sent    -> sent again
  QUEUED or RUNNING past the deadline (no GPU capacity that long) -> FAILED, TIMED_OUT
  RUNNING whose attempts are spent  -> FAILED, WORKER_CRASHED
  RUNNING whose worker died         -> a fresh copy of its item (its message may be gone)
  otherwise                         -> looked at again later
Messages past a queue's retention are deleted, not moved to a DLQ (SQS Developer Guide), so the record, not a
message, is what guarantees an ending. The intake DLQ is re-driven too, a few times per message.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from common.abandoned import fail_crashed, fail_intake_gave_up, fail_timed_out, fail_upload_never_arrived
from common.contract import JobState, WorkItem
from common.jobs import JobRecord
from common.lifecycle import (
    CLAIM_UNTIL,
    DEADLINE_AT,
    SWEEP_AT,
    WORK_ITEM,
    WORK_ITEM_SENT,
    JobLifecycle,
    NotificationPending,
    due_for_sweep,
)
from common.work_queue import WorkQueue
from functions.intake.s3_events import UploadEvent, event_body

log = logging.getLogger(__name__)

MAX_INTAKE_REDRIVES = 3
INTAKE_REDRIVES = "intake_redrives"
REDRIVE_ATTRIBUTE = "upscaler_redrives"  # on an intake DLQ message sent back to intake
PARKED_SECONDS = 43_000  # an intake DLQ message re-driven enough times stays parked for the alarm and a human


@dataclass
class SweepReport:
    looked: int = 0
    actions: collections.Counter[str] = field(default_factory=collections.Counter)


class Sweeper:
    def __init__(self, *, lifecycle: JobLifecycle, work_queue: WorkQueue, sqs: Any, intake_queue_url: str,
                 intake_dlq_url: str, clock: Callable[[], float] = time.time) -> None:
        self._lifecycle = lifecycle
        self._store = lifecycle.store
        self._work_queue = work_queue
        self._sqs = sqs
        self._intake_url = intake_queue_url
        self._intake_dlq_url = intake_dlq_url
        self._clock = clock

    def run(self, *, limit: int = 500) -> SweepReport:
        report = SweepReport()
        for job_id in due_for_sweep(self._store, self._clock(), limit=limit):
            report.looked += 1
            try:
                report.actions[self.sweep_one(job_id)] += 1
            except Exception:  # one record's trouble never stops the sweep; the next run looks again
                log.exception("sweeping job %s failed", job_id)
                report.actions["error"] += 1
        if self._intake_dlq_url:
            report.actions["intake_dlq_redriven"] += self.redrive_intake_dlq()
        return report

    def sweep_one(self, job_id: str) -> str:
        record = self._store.get(job_id)
        now = self._clock()
        if record is None:
            return "gone"
        if SWEEP_AT not in record.attributes or record.number(SWEEP_AT) > now:
            return "not_due"  # the index lags the table
        if record.state.is_terminal:
            return self._terminal(record)
        if record.state is JobState.AWAITING_UPLOAD:
            return "upload_never_arrived" if fail_upload_never_arrived(self._lifecycle, record).won else "changed"
        if record.state is JobState.ACCEPTED:
            return self._accepted(record, now)
        if record.state is JobState.QUEUED:
            return self._queued(record, now)
        return self._running(record, now)

    def _terminal(self, record: JobRecord) -> str:
        try:
            if self._lifecycle.resume(record):
                return "notification_sent"
        except NotificationPending:
            return "notification_pending"
        self._lifecycle.close_sweep(record)
        return "closed"

    def _accepted(self, record: JobRecord, now: float) -> str:
        attrs = record.attributes
        if now < float(attrs.get("lease_until") or 0):
            self._lifecycle.postpone_sweep(record.job_id, float(attrs["lease_until"]) + 1)
            return "intake_busy"
        tries = int(record.number(INTAKE_REDRIVES))
        if tries >= MAX_INTAKE_REDRIVES:
            return "intake_gave_up" if fail_intake_gave_up(self._lifecycle, record, tries).won else "changed"
        upload = UploadEvent(bucket=record.input_bucket, key=record.input_key,
                             size=int(attrs["input_size"]) if attrs.get("input_size") is not None else None,
                             etag=attrs.get("input_etag"), version_id=attrs.get("input_version"),
                             event_name="ObjectCreated:Put", event_time=str(attrs.get("upload_event_time") or ""),
                             sequencer=str(attrs.get("input_sequencer") or ""))
        self._sqs.send_message(QueueUrl=self._intake_url, MessageBody=event_body(upload))
        self._store.update(record.job_id, {SWEEP_AT: round(now + self._lifecycle.policy.stale_accepted_seconds, 3)},
                           add={INTAKE_REDRIVES: 1})
        return "intake_redriven"

    def _queued(self, record: JobRecord, now: float) -> str:
        if record.attributes.get(WORK_ITEM_SENT) is False:
            self._lifecycle.resend_unsent(record, self._work_queue.send)
            return "item_sent"
        deadline = record.number(DEADLINE_AT)
        if deadline and now >= deadline:
            return "timed_out" if self._end(record, fail_timed_out) else "changed"
        self._lifecycle.postpone_sweep(record.job_id, deadline or now + self._lifecycle.policy.stranded_after_seconds)
        return "waiting_for_a_gpu"

    def _running(self, record: JobRecord, now: float) -> str:
        if record.number(CLAIM_UNTIL) >= now:  # alive: the holder's renewals move sweep_at
            self._lifecycle.postpone_sweep(record.job_id,
                                           record.number(CLAIM_UNTIL) + self._lifecycle.policy.stranded_after_seconds)
            return "running"
        if self._lifecycle.crashed_out(record):
            return "crashed_out" if self._end(record, fail_crashed) else "changed"
        deadline = record.number(DEADLINE_AT)
        if deadline and now >= deadline:
            return "timed_out" if self._end(record, fail_timed_out) else "changed"
        return "redriven" if self._lifecycle.redrive(record, self._work_queue.send) else "changed"

    def _end(self, record: JobRecord, ending: Callable[..., Any]) -> bool:
        item = WorkItem.from_json(str(record.attributes[WORK_ITEM]))
        return bool(ending(self._lifecycle, item, record, datetime.now(UTC)).won)

    def redrive_intake_dlq(self, *, max_messages: int = 100) -> int:
        """S3 events whose intake kept failing (before any record was written, so no sweep entry exists):
        back to intake, at most MAX_INTAKE_REDRIVES times each; then parked for the DLQ alarm."""
        moved = 0
        while moved < max_messages:
            messages = self._sqs.receive_message(QueueUrl=self._intake_dlq_url, MaxNumberOfMessages=10,
                                                 MessageAttributeNames=[REDRIVE_ATTRIBUTE],
                                                 VisibilityTimeout=60).get("Messages", [])
            if not messages:
                break
            for message in messages:
                tries = int(message.get("MessageAttributes", {}).get(REDRIVE_ATTRIBUTE, {}).get("StringValue", 0))
                if tries >= MAX_INTAKE_REDRIVES:
                    self._sqs.change_message_visibility(QueueUrl=self._intake_dlq_url,
                                                        ReceiptHandle=message["ReceiptHandle"],
                                                        VisibilityTimeout=PARKED_SECONDS)
                    continue
                self._sqs.send_message(QueueUrl=self._intake_url, MessageBody=message["Body"], MessageAttributes={
                    REDRIVE_ATTRIBUTE: {"DataType": "Number", "StringValue": str(tries + 1)}})
                self._sqs.delete_message(QueueUrl=self._intake_dlq_url, ReceiptHandle=message["ReceiptHandle"])
                moved += 1
        return moved
