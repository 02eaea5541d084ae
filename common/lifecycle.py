"""The job lifecycle: the one owner of "exactly one terminal notification per upload".

Every state change of a job goes through here, as a conditional write on its record:

  ACCEPTED --enqueue--> QUEUED --claim--> RUNNING --finish--> SUCCEEDED | FAILED
  ACCEPTED --finish--> REJECTED | FAILED          RUNNING --release--> QUEUED
  QUEUED | RUNNING with an expired lease --finish (abandoned)--> FAILED
  HTTP API jobs: AWAITING_UPLOAD --accept_upload (intake)--> ACCEPTED
                 AWAITING_UPLOAD | ACCEPTED | QUEUED --cancel--> CANCELLED
                 AWAITING_UPLOAD, link expired + grace --expire_awaiting_upload (sweeper)--> FAILED

* **Enqueue** stores the work item on the record with the QUEUED write, then sends it, then marks it
  sent: a retry that finds it QUEUED and unsent sends it again (a rare duplicate delivery is harmless).
* **Claim** gives one delivery of a work item a token and a lease. A RUNNING job can be claimed again
  only after its lease ran out (its worker died); two live workers never hold one job. Only the
  token's holder may renew the lease, release the job or finish it: a stale attempt cannot.
* **Finish** is the terminal write, and it carries the terminal notification (the outbox) and a short
  publish lease. Whoever wins it publishes the notification and marks it sent; whoever loses says
  nothing. A publish that fails leaves the message on the record; the next delivery of the same work
  (intake's S3 event, the work item, the DLQ message) finds it there and, once it has taken the
  publish lease with a conditional write, sends it (`resume`): two deliveries never both publish.
"""

from __future__ import annotations

import enum
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from boto3.dynamodb.conditions import Attr, ConditionBase
from botocore.exceptions import BotoCoreError, ClientError

from common import aws
from common.contract import (
    ErrorInfo,
    EventType,
    FailureCode,
    ImageInfo,
    JobState,
    Notification,
    WorkItem,
    positive_or_none,
    utc_now_iso,
    validate_notification,
)
from common.jobs import JobRecord, JobStore
from common.notify import Notifier
from common.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTBOX_MESSAGE = "notification"  # the terminal notification's JSON, written with the terminal state
OUTBOX_SENT = "notified"  # False until SNS accepted the message
OUTBOX_MESSAGE_ID = "notification_message_id"
OUTBOX_UNTIL = "notify_until"  # epoch seconds: whoever holds the outbox publishes until then
OUTBOX_LEASE_SECONDS = 30.0  # a publish with its retries takes seconds
WORK_ITEM = "work_item"  # the queued work item's JSON, written with QUEUED
WORK_ITEM_SENT = "work_item_sent"
CLAIM_TOKEN = "claim_token"
CLAIM_UNTIL = "claim_until"  # epoch seconds: the holder's lease
CLAIM_MESSAGE = "claim_message"  # the SQS message id of the delivery that holds the claim
ATTEMPTS = "attempts"
PUBLISH_ATTEMPTS = 3  # on top of botocore's own retries


class ClaimOutcome(enum.StrEnum):
    CLAIMED = "claimed"
    TERMINAL = "terminal"  # nothing left to do but, perhaps, resume its notification
    HELD = "held"  # a live worker holds it: this delivery is a duplicate for now
    NOT_QUEUED = "not_queued"  # still ACCEPTED: intake has not finished queueing it
    MISSING = "missing"  # no record (expired by TTL, or never written)


@dataclass(frozen=True, slots=True)
class Claim:
    job_id: str
    token: str
    attempt: int


@dataclass(frozen=True, slots=True)
class ClaimResult:
    outcome: ClaimOutcome
    claim: Claim | None = None
    record: JobRecord | None = None

    def held_by_another_message(self, message_id: str) -> bool:
        """For HELD: the live claim came from another copy of the item (so this copy is a duplicate)."""
        holder = self.record.attributes.get(CLAIM_MESSAGE) if self.record else None
        return bool(holder) and holder != message_id

    def seconds_held(self, now: float) -> float:
        """For HELD: how long the current holder's lease still runs."""
        return max(0.0, self.record.number(CLAIM_UNTIL) - now) if self.record else 0.0


class Holder(enum.Enum):
    """Who may make the terminal write, and so which condition guards it."""

    INTAKE = "intake"  # only from ACCEPTED: intake's own decision (rejection, upload gone)
    CLAIM = "claim"  # only the claim's token holder, while RUNNING
    ABANDONED = "abandoned"  # QUEUED, or RUNNING whose lease ran out: nobody can still finish it
    CALLER = "caller"  # the HTTP API's caller cancels: AWAITING_UPLOAD, ACCEPTED or QUEUED (no worker has it)
    UPLOAD_EXPIRED = "upload_expired"  # AWAITING_UPLOAD whose upload link expired (plus a grace) long ago


@dataclass(frozen=True, slots=True)
class Finish:
    won: bool  # this call made the job terminal
    sent: bool  # ... and SNS has its notification (False: it waits on the record for `resume`)


class JobLifecycle:
    def __init__(self, *, store: JobStore, notifier: Notifier, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self._notifier = notifier
        self._clock = clock
        self._sleep = sleep

    # --- intake ----------------------------------------------------------------------------------
    def enqueue(self, item: WorkItem, send: Callable[[WorkItem], object],
                attributes: Mapping[str, Any] | None = None) -> bool:
        """ACCEPTED -> QUEUED with the item stored, then send it. False if the job had left ACCEPTED."""
        now = utc_now_iso()
        won = self.store.update(item.job_id, {
            **(attributes or {}), "state": str(JobState.QUEUED), "updated_at": now, "queued_at": now,
            WORK_ITEM: item.to_json(), WORK_ITEM_SENT: False,
        }, condition=Attr("state").eq(str(JobState.ACCEPTED)))
        if won:
            self._send(item, send)
        return won

    def resend_unsent(self, record: JobRecord, send: Callable[[WorkItem], object]) -> bool:
        """A QUEUED job whose work item may never have reached the queue: send it (again)."""
        if record.state is not JobState.QUEUED or record.attributes.get(WORK_ITEM_SENT) is not False:
            return False
        self._send(WorkItem.from_json(str(record.attributes[WORK_ITEM])), send)
        return True

    def _send(self, item: WorkItem, send: Callable[[WorkItem], object]) -> None:
        send(item)
        try:
            self.store.update(item.job_id, {WORK_ITEM_SENT: True})
        except (ClientError, BotoCoreError):  # a retry sends once more; the claim makes that harmless
            log.warning("work item of %s sent but not marked sent", item.job_id, exc_info=True)

    # --- worker ----------------------------------------------------------------------------------
    def claim(self, job_id: str, *, lease_seconds: float, message_id: str = "",
              attributes: Mapping[str, Any] | None = None) -> ClaimResult:
        """Take the job for one delivery of its work item: QUEUED, or RUNNING whose lease has run out."""
        now = self._clock()
        token = uuid.uuid4().hex
        free = Attr("state").eq(str(JobState.QUEUED)) | (
            Attr("state").eq(str(JobState.RUNNING)) & Attr(CLAIM_UNTIL).lt(round(now, 3)))
        claimed = self.store.update_record(job_id, {
            **(attributes or {}), "state": str(JobState.RUNNING), "updated_at": utc_now_iso(),
            "running_at": utc_now_iso(), CLAIM_TOKEN: token, CLAIM_UNTIL: round(now + lease_seconds, 3),
            CLAIM_MESSAGE: message_id or None,
        }, condition=free, add={ATTEMPTS: 1})
        if claimed is not None:
            return ClaimResult(ClaimOutcome.CLAIMED, Claim(job_id, token, int(claimed.number(ATTEMPTS, 1))), claimed)
        record = self.store.get(job_id)
        if record is None:
            return ClaimResult(ClaimOutcome.MISSING)
        if record.state.is_terminal:
            return ClaimResult(ClaimOutcome.TERMINAL, record=record)
        if record.state is JobState.ACCEPTED:
            return ClaimResult(ClaimOutcome.NOT_QUEUED, record=record)
        return ClaimResult(ClaimOutcome.HELD, record=record)

    def renew(self, claim: Claim, lease_seconds: float) -> bool:
        """Extend the holder's lease. False: the claim was lost (the job was taken over or finished)."""
        return self.store.update(claim.job_id, {CLAIM_UNTIL: round(self._clock() + lease_seconds, 3)},
                                 condition=self._held_by(claim))

    def release(self, claim: Claim) -> bool:
        """Give the job back to the queue (e.g. on SIGTERM): RUNNING -> QUEUED, for the next delivery."""
        return self.store.update(claim.job_id, {"state": str(JobState.QUEUED), "updated_at": utc_now_iso(),
                                                "released_at": utc_now_iso()},
                                 condition=self._held_by(claim), remove=(CLAIM_TOKEN, CLAIM_UNTIL))

    # --- the terminal write ------------------------------------------------------------------------
    def finish(self, notification: Notification, state: JobState, *, holder: Holder, claim: Claim | None = None,
               attributes: Mapping[str, Any] | None = None) -> Finish:
        """Make the job terminal with its notification stored, then publish it. Only the winner publishes."""
        if not state.is_terminal:
            raise ValueError(f"{state} is not a terminal state")
        payload = notification.to_dict()
        validate_notification(payload)  # a contract break is our bug: never make it terminal with it
        now = utc_now_iso()
        won = self.store.update(notification.job_id, {
            **(attributes or {}), "state": str(state), "updated_at": now, f"{state.lower()}_at": now,
            OUTBOX_MESSAGE: notification.to_json(), OUTBOX_SENT: False,
            OUTBOX_UNTIL: round(self._clock() + OUTBOX_LEASE_SECONDS, 3),
        }, condition=self._terminal_condition(holder, claim), remove=(CLAIM_TOKEN,) if claim else ())
        if not won:
            return Finish(won=False, sent=False)
        return Finish(won=True, sent=self._publish(notification.job_id, payload))

    def resume(self, record: JobRecord) -> bool:
        """Publish the stored notification of a terminal job that was not sent yet. True if one went out now.

        Raises NotificationPending when another delivery holds the outbox (it is publishing right now) or
        the publish fails again: the caller's message is then delivered once more and looks again."""
        payload = pending_notification(record)
        if payload is None:
            return False
        now = self._clock()
        taken = self.store.update(record.job_id, {OUTBOX_UNTIL: round(now + OUTBOX_LEASE_SECONDS, 3)},
                                  condition=Attr(OUTBOX_SENT).eq(False) & (
                                      Attr(OUTBOX_UNTIL).not_exists() | Attr(OUTBOX_UNTIL).lt(round(now, 3))))
        if not taken:
            raise NotificationPending(f"the notification of job {record.job_id} is being sent elsewhere")
        if not self._publish(record.job_id, payload):
            raise NotificationPending(f"the notification of job {record.job_id} is still unsent")
        return True

    def _publish(self, job_id: str, payload: Mapping[str, Any]) -> bool:
        message_id = self._retrying(lambda: self._notifier.publish_payload(payload))
        if message_id is None:
            log.error("could not publish the notification of %s; it waits on the record", job_id)
            return False
        # Only this process knows SNS has the message: try as hard to record it, or a redelivery sends it again.
        if self._retrying(lambda: self.store.update(job_id, {OUTBOX_SENT: True, OUTBOX_MESSAGE_ID: message_id})) \
                is None:  # then delivery is at least once: a retry may send it again
            log.warning("notification of %s published but not marked sent", job_id)
        return True

    def _retrying(self, call: Callable[[], T]) -> T | None:
        """`call`'s result, tried PUBLISH_ATTEMPTS times with a growing pause; None if every try failed."""
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                return call()
            except (ClientError, BotoCoreError):
                log.warning("try %d of %d failed", attempt, PUBLISH_ATTEMPTS, exc_info=True)
                if attempt < PUBLISH_ATTEMPTS:
                    self._sleep(0.5 * attempt)
        return None

    def _held_by(self, claim: Claim) -> ConditionBase:
        return Attr("state").eq(str(JobState.RUNNING)) & Attr(CLAIM_TOKEN).eq(claim.token)

    def _terminal_condition(self, holder: Holder, claim: Claim | None) -> ConditionBase:
        if holder is Holder.CLAIM:
            if claim is None:
                raise ValueError("a claim's terminal write needs the claim")
            return self._held_by(claim)
        if holder is Holder.INTAKE:
            return Attr("state").eq(str(JobState.ACCEPTED))
        if holder is Holder.CALLER:
            return Attr("state").is_in([str(s) for s in CANCELLABLE_STATES])
        if holder is Holder.UPLOAD_EXPIRED:
            return Attr("state").eq(str(JobState.AWAITING_UPLOAD)) & Attr(UPLOAD_UNTIL).lt(
                round(self._clock() - UPLOAD_ARRIVAL_GRACE_SECONDS, 3))
        return Attr("state").eq(str(JobState.QUEUED)) | (
            Attr("state").eq(str(JobState.RUNNING)) & (Attr(CLAIM_UNTIL).not_exists()
                                                       | Attr(CLAIM_UNTIL).lt(round(self._clock(), 3))))


    @classmethod
    def from_settings(cls, settings: Settings) -> JobLifecycle:
        """The lifecycle of the deployment's jobs table and topic (clients from common.aws)."""
        store = JobStore(dynamodb_client=aws.client("dynamodb", settings), table_name=settings.jobs_table,
                         ttl_days=settings.job_record_ttl_days)
        return cls(store=store, notifier=Notifier(sns_client=aws.client("sns", settings),
                                                  topic_arn=settings.topic_arn, upload_prefix=settings.upload_prefix))

    # --- the HTTP API's jobs (functions/api) ----------------------------------------------------------
    def await_upload(self, *, job_id: str, input_bucket: str, input_key: str, upload_until: float,
                     attributes: Mapping[str, Any]) -> bool:
        """Record a job the HTTP API created: AWAITING_UPLOAD until its upload (to `input_key`, by the epoch
        second `upload_until`) arrives. False if the id is taken."""
        return self.store.create(job_id=job_id, dedupe="", input_bucket=input_bucket, input_key=input_key,
                                 state=JobState.AWAITING_UPLOAD, attributes={**attributes, UPLOAD_UNTIL: upload_until})

    def accept_upload(self, job_id: str, *, dedupe: str, attributes: Mapping[str, Any]) -> bool:
        """AWAITING_UPLOAD -> ACCEPTED: intake received the job's upload (the first to arrive wins)."""
        now = utc_now_iso()
        return self.store.update(job_id, {**attributes, "dedupe_key": dedupe, "state": str(JobState.ACCEPTED),
                                          "updated_at": now, "accepted_at": now},
                                 condition=Attr("state").eq(str(JobState.AWAITING_UPLOAD)))

    def cancel(self, record: JobRecord) -> Finish:
        """CANCELLED with one upscale.cancelled, while no worker has the job (else `won` is False). A work item
        already on the queue then finds the job terminal and is dropped."""
        return self.finish(_api_job_notification(record, EventType.CANCELLED, CANCELLED_ERROR), JobState.CANCELLED,
                           holder=Holder.CALLER, attributes={"error_code": CANCELLED_ERROR.code,
                                                             "error_message": CANCELLED_ERROR.message})

    def expire_awaiting_upload(self, record: JobRecord) -> Finish:
        """FAILED (INPUT_MISSING) for an API job whose upload never came: for the sweeper. Only once the link has
        expired and UPLOAD_ARRIVAL_GRACE_SECONDS more have passed (else `won` is False); an upload that comes later
        is refused by intake as an upload of an ended job."""
        deadline = datetime.fromtimestamp(record.number(UPLOAD_UNTIL), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        error = ErrorInfo(code=str(FailureCode.INPUT_MISSING), retryable=False,
                          message=f"The upload never arrived before its link expired ({deadline}).")
        return self.finish(_api_job_notification(record, EventType.FAILED, error), JobState.FAILED,
                           holder=Holder.UPLOAD_EXPIRED,
                           attributes={"error_code": error.code, "error_message": error.message})


UPLOAD_UNTIL = "upload_until"  # epoch seconds: an API job's upload link works until then
# How long after its link expired an API job still waits for its upload: one that reached S3 in time may sit
# in the intake queue for a while (batching, retries). The sweeper ends it after this.
UPLOAD_ARRIVAL_GRACE_SECONDS = 900
CANCELLABLE_STATES = (JobState.AWAITING_UPLOAD, JobState.ACCEPTED, JobState.QUEUED)
CANCELLED_ERROR = ErrorInfo(code="CANCELLED", message="The job was cancelled by its caller before a worker took it.",
                            retryable=False)


def _api_job_notification(record: JobRecord, event_type: EventType, error: ErrorInfo) -> Notification:
    """The terminal notification of a job that no worker has taken: what the record knows of it."""
    attrs, options = record.attributes, record.options
    return Notification(
        event_type=event_type, job_id=record.job_id,
        input=ImageInfo(record.input_bucket, record.input_key, positive_or_none(attrs.get("input_width")),
                        positive_or_none(attrs.get("input_height")), attrs.get("input_format")),
        model=str(options.model), scale=options.scale, strength=options.strength, error=error)


def stored_notification(record: JobRecord) -> dict[str, Any] | None:
    """The terminal notification stored with a terminal job (sent or not), or None."""
    text = record.attributes.get(OUTBOX_MESSAGE)
    return dict(json.loads(str(text))) if record.state.is_terminal and text else None


class NotificationPending(RuntimeError):
    """A terminal job's notification could not be published yet; deliver the triggering message again."""


def pending_notification(record: JobRecord) -> dict[str, Any] | None:
    """The stored terminal notification of `record` if it has not been sent yet, else None."""
    attrs = record.attributes
    if record.state.is_terminal and attrs.get(OUTBOX_SENT) is False and attrs.get(OUTBOX_MESSAGE):
        return dict(json.loads(str(attrs[OUTBOX_MESSAGE])))
    return None

