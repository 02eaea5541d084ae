"""The job lifecycle: the one owner of the delivery promise.

Every state change of a job is a conditional write on its record, made here:

  AWAITING_UPLOAD --(API upload arrives)--> ACCEPTED --enqueue--> QUEUED --claim--> RUNNING --finish--> SUCCEEDED |
  ACCEPTED --finish (intake)--> REJECTED | FAILED | SUPERSEDED              FAILED | SUPERSEDED
  RUNNING --release (give-back, transient failure)--> QUEUED
  AWAITING_UPLOAD | ACCEPTED | QUEUED --finish (its caller)--> CANCELLED
  The HTTP API's jobs: await_upload (AWAITING_UPLOAD), accept_upload (-> ACCEPTED, intake), cancel (CANCELLED);
  one whose upload never came is ended by the sweeper once its link expired UPLOAD_ARRIVAL_GRACE_SECONDS ago.
  QUEUED | RUNNING whose attempt died --finish (abandoned)--> FAILED  (crash budget spent, or past its deadline)

The promise, and what keeps it:
* **Exactly one terminal state per uploaded object version.** Every terminal write is conditional on the state
  it leaves (and, for a worker, on its claim token), so two deliveries can never both end a job.
* **At least one notification, every copy identical, one event id.** The terminal write stores the
  notification's exact text with the state (an outbox); whoever wins it publishes that text and marks it sent.
  SNS standard topics have no idempotency key and a Publish can succeed while its response is lost, so a retry
  may send a second copy: copies are byte-identical and carry the same `event_id`, which receivers dedupe on.
  An outbox lease (token + expiry) makes one publisher at a time: every retry first renews the lease with a
  conditional write, and one publish is bounded (common.aws) well below the lease, so a delivery that takes the
  lease over after it expired never overlaps a publisher that still believes it holds it.
* **Crashes are counted on the record, not by SQS receive counts** (ApproximateReceiveCount counts every receive,
  give-backs included). A claim whose lease lapsed after its attempt reached inference is a crash; the next claim
  takes the job over and counts it. When the crashes reach `max_attempts`, the job ends FAILED (WORKER_CRASHED).
  Give-backs (SIGTERM, a prefetched item never started) never burn that budget; an attempt that died outside
  inference (its worker died while it waited, decoded, for the GPU, or while it was encoded beside another
  image's inference) counts half, so an image that kills its worker while decoding or encoding still ends, and
  an innocent image in the same worker as a killer one does not.
* **Nothing waits forever.** Every open record (not terminal, or terminal with its notification unsent) carries
  `sweep_shard` + `sweep_at`, a sparse index the sweeper (functions/sweeper) queries for records past their
  bound: it re-drives what was lost and ends what is past its deadline, through the functions here.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.conditions import Attr, ConditionBase
from botocore.exceptions import BotoCoreError, ClientError

from common import aws
from common.clock import server_time
from common.contract import (
    ErrorInfo,
    EventType,
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

OUTBOX_MESSAGE = "notification"  # the terminal notification's exact text, written with the terminal state
OUTBOX_SENT = "notified"  # False until SNS accepted the message
OUTBOX_MESSAGE_ID = "notification_message_id"
OUTBOX_TOKEN = "notify_token"  # who holds the outbox lease
OUTBOX_UNTIL = "notify_until"  # epoch seconds: the holder publishes until then
# One publish, with botocore's retries, is bounded by the SNS client's timeouts (common.aws.PUBLISH_CONFIG) far
# below this, so a publisher's lease outlives its call even with a few tens of seconds of clock skew.
OUTBOX_LEASE_SECONDS = 90.0
PUBLISH_ATTEMPTS = 3
WORK_ITEM = "work_item"  # the queued work item's JSON, written with QUEUED
WORK_ITEM_SENT = "work_item_sent"
DEADLINE_AT = "deadline_at"  # epoch seconds: a job still waiting for a GPU then ends FAILED (TIMED_OUT)
CLAIM_TOKEN = "claim_token"
CLAIM_UNTIL = "claim_until"  # epoch seconds: the holder's lease
CLAIM_MESSAGE = "claim_message"  # the SQS message id of the delivery that holds the claim
INFERENCE_TOKEN = "inference_token"  # the claim token of the attempt that started inference
ATTEMPTS = "attempts"  # claims
CRASHES = "crashes"  # attempts that died after starting inference (counted by the claim that takes over)
LOST = "lost"  # attempts that died before inference (e.g. with the item prefetched); weigh half a crash
FAILURES = "failures"  # attempts that failed for a transient reason and gave the job back
RELEASES = "releases"  # give-backs that are no failure (SIGTERM, a prefetched item never started)
REDRIVES = "redrives"  # fresh copies of the work item sent by the notifier or the sweeper
SWEEP_SHARD = "sweep_shard"  # present while the record is open; with SWEEP_AT, the sweeper's sparse index
SWEEP_AT = "sweep_at"  # epoch seconds: when the sweeper should look if nothing else happened
SWEEP_INDEX = "sweep"
SWEEP_SHARDS = tuple(f"open#{digit}" for digit in "0123456789abcdef")
UNSENT_GRACE_SECONDS = 120.0  # a QUEUED item not yet marked sent: intake's own retry comes first


def sweep_shard(job_id: str) -> str:
    """The index partition of an open record (16, so no partition is hot)."""
    return f"open#{hashlib.sha256(job_id.encode()).hexdigest()[0]}"


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """The bounds the lifecycle enforces (from Settings; tests make their own)."""

    max_attempts: int = 3  # crashes (and transient failures) before the job ends FAILED
    lease_seconds: float = 120.0  # a claim's lease (= the work item's visibility)
    job_deadline_seconds: float = 86_400.0  # from enqueue: a job still waiting then ends FAILED (TIMED_OUT)
    stale_accepted_seconds: float = 3_600.0  # an ACCEPTED record this old: intake's own retries are over

    @classmethod
    def from_settings(cls, settings: Settings) -> LifecyclePolicy:
        return cls(max_attempts=settings.max_attempts, lease_seconds=float(settings.work_visibility_seconds),
                   job_deadline_seconds=float(settings.job_deadline_seconds),
                   stale_accepted_seconds=float(settings.stale_accepted_seconds))

    @property
    def stranded_after_seconds(self) -> float:
        """A lapsed claim this long: its item should have come back by itself; the sweeper re-sends a copy."""
        return 2 * self.lease_seconds


class ClaimOutcome(enum.StrEnum):
    CLAIMED = "claimed"
    TERMINAL = "terminal"  # nothing left to do but, perhaps, resume its notification
    HELD = "held"  # a live worker holds it: this delivery is a duplicate for now
    NOT_QUEUED = "not_queued"  # still ACCEPTED (or awaiting its upload): intake has not queued it
    MISSING = "missing"  # no record (expired by TTL, or never written)
    CRASHED = "crashed"  # its attempts died max_attempts times: end it FAILED (`finish`, Holder.ABANDONED)


@dataclass(frozen=True, slots=True)
class Claim:
    job_id: str
    token: str
    attempt: int
    failed_before: int = 0  # crashes + transient failures of earlier attempts


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

    INTAKE = "intake"  # only from ACCEPTED: intake's own decision (rejection, upload gone, superseded)
    CLAIM = "claim"  # only the claim's token holder, while RUNNING
    ABANDONED = "abandoned"  # QUEUED, or RUNNING whose attempt died: nobody can still finish it
    CALLER = "caller"  # the job's caller cancels it: only before a worker took it


@dataclass(frozen=True, slots=True)
class Finish:
    won: bool  # this call made the job terminal
    sent: bool  # ... and SNS has its notification, or another delivery holds the outbox (False: `resume` later)


class JobLifecycle:
    def __init__(self, *, store: JobStore, notifier: Notifier, policy: LifecyclePolicy | None = None,
                 clock: Callable[[], float] = server_time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.policy = policy or LifecyclePolicy()
        self._notifier = notifier
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings) -> JobLifecycle:
        """The lifecycle every component builds: the jobs table, the topic, the settings' bounds."""
        return cls(store=JobStore(dynamodb_client=aws.client("dynamodb", settings), table_name=settings.jobs_table,
                                  ttl_days=settings.job_record_ttl_days),
                   notifier=Notifier(sns_client=aws.client("sns", settings), topic_arn=settings.topic_arn,
                                     upload_prefix=settings.upload_prefix),
                   policy=LifecyclePolicy.from_settings(settings))

    # --- intake ----------------------------------------------------------------------------------
    def accept(self, *, job_id: str, dedupe: str, input_bucket: str, input_key: str,
               attributes: Mapping[str, Any] | None = None) -> bool:
        """A new ACCEPTED record for one uploaded object version. False if it exists (a duplicate event)."""
        return self.store.create(job_id=job_id, dedupe=dedupe, input_bucket=input_bucket, input_key=input_key,
                                 attributes={**(attributes or {}),
                                             **self._open(job_id, self.policy.stale_accepted_seconds)})

    def enqueue(self, item: WorkItem, send: Callable[[WorkItem], object],
                attributes: Mapping[str, Any] | None = None) -> bool:
        """ACCEPTED -> QUEUED with the item stored, then send it. False if the job had left ACCEPTED."""
        now, iso = self._clock(), utc_now_iso()
        deadline = round(now + self.policy.job_deadline_seconds, 3)
        won = self.store.update(item.job_id, {
            **(attributes or {}), "state": str(JobState.QUEUED), "updated_at": iso, "queued_at": iso,
            WORK_ITEM: item.to_json(), WORK_ITEM_SENT: False, DEADLINE_AT: deadline,
            SWEEP_AT: round(now + UNSENT_GRACE_SECONDS, 3),
        }, condition=Attr("state").eq(str(JobState.ACCEPTED)))
        if won:
            self._send(item, send, deadline)
        return won

    def resend_unsent(self, record: JobRecord, send: Callable[[WorkItem], object]) -> bool:
        """A QUEUED job whose work item may never have reached the queue: send it (again)."""
        if record.state is not JobState.QUEUED or record.attributes.get(WORK_ITEM_SENT) is not False:
            return False
        self._send(WorkItem.from_json(str(record.attributes[WORK_ITEM])), send, record.number(DEADLINE_AT))
        return True

    def _send(self, item: WorkItem, send: Callable[[WorkItem], object], deadline: float) -> None:
        send(item)
        try:
            self.store.update(item.job_id, {WORK_ITEM_SENT: True, SWEEP_AT: deadline})
        except (ClientError, BotoCoreError):  # the sweeper sends once more; the claim makes that harmless
            log.warning("work item of %s sent but not marked sent", item.job_id, exc_info=True)

    # --- worker ----------------------------------------------------------------------------------
    def claim(self, job_id: str, *, message_id: str = "", attributes: Mapping[str, Any] | None = None) -> ClaimResult:
        """Take the job for one delivery of its work item: QUEUED, or RUNNING whose attempt died (counted)."""
        for _ in range(3):  # a takeover can lose a race to another delivery: look again
            claimed = self._take(job_id, Attr("state").eq(str(JobState.QUEUED)), message_id, attributes, {})
            if claimed is not None:
                return claimed
            record = self.store.get(job_id)
            if record is None:
                return ClaimResult(ClaimOutcome.MISSING)
            if record.state.is_terminal:
                return ClaimResult(ClaimOutcome.TERMINAL, record=record)
            if record.state in (JobState.ACCEPTED, JobState.AWAITING_UPLOAD):
                return ClaimResult(ClaimOutcome.NOT_QUEUED, record=record)
            if record.state is JobState.QUEUED:
                continue  # released a moment ago
            if record.number(CLAIM_UNTIL) >= self._clock():
                return ClaimResult(ClaimOutcome.HELD, record=record)
            if self.crashed_out(record):
                return ClaimResult(ClaimOutcome.CRASHED, record=record)
            crashed = _attempt_crashed(record)
            claimed = self._take(job_id, self._lapsed(record), message_id, attributes,
                                 {CRASHES if crashed else LOST: 1})
            if claimed is not None:
                log.warning("took over job %s from an attempt that %s", job_id,
                            "died in inference (a crash)" if crashed else "died before inference")
                return claimed
        return ClaimResult(ClaimOutcome.HELD, record=self.store.get(job_id))

    def _take(self, job_id: str, condition: ConditionBase, message_id: str, attributes: Mapping[str, Any] | None,
              add: Mapping[str, int]) -> ClaimResult | None:
        now, token = self._clock(), uuid.uuid4().hex
        until = round(now + self.policy.lease_seconds, 3)
        claimed = self.store.update_record(job_id, {
            **(attributes or {}), "state": str(JobState.RUNNING), "updated_at": utc_now_iso(),
            "running_at": utc_now_iso(), CLAIM_TOKEN: token, CLAIM_UNTIL: until, CLAIM_MESSAGE: message_id or None,
            SWEEP_AT: round(until + self.policy.stranded_after_seconds, 3),
        }, condition=condition, add={ATTEMPTS: 1, **add})
        if claimed is None:
            return None
        failed = int(claimed.number(CRASHES)) + int(claimed.number(FAILURES))
        return ClaimResult(ClaimOutcome.CLAIMED, Claim(job_id, token, int(claimed.number(ATTEMPTS, 1)), failed),
                           claimed)

    def start_inference(self, claim: Claim) -> bool:
        """Mark that this attempt starts the GPU work: until `end_inference`, dying with it counts as a crash.
        False: the claim was lost."""
        return self.store.update(claim.job_id, {INFERENCE_TOKEN: claim.token}, condition=self._held_by(claim))

    def end_inference(self, claim: Claim) -> bool:
        """The network is done with this image. A worker that dies from here on (while it encodes this image
        beside the next one's inference) most likely died of the next image: this one counts half a crash."""
        return self.store.update(claim.job_id, {}, condition=self._held_by(claim), remove=(INFERENCE_TOKEN,))

    def renew(self, claim: Claim) -> bool:
        """Extend the holder's lease. False: the claim was lost (the job was taken over or finished)."""
        until = round(self._clock() + self.policy.lease_seconds, 3)
        return self.store.update(claim.job_id, {
            CLAIM_UNTIL: until, SWEEP_AT: round(until + self.policy.stranded_after_seconds, 3),
        }, condition=self._held_by(claim))

    def release(self, claim: Claim, *, failed: bool = False) -> bool:
        """Give the job back (RUNNING -> QUEUED) for the next delivery: a give-back (`failed` False: SIGTERM, an
        item never started) costs nothing; a transient failure counts against max_attempts."""
        return self.store.update(claim.job_id, {
            "state": str(JobState.QUEUED), "updated_at": utc_now_iso(), "released_at": utc_now_iso(),
            SWEEP_AT: round(self._clock() + self.policy.stranded_after_seconds, 3),
        }, condition=self._held_by(claim), remove=(CLAIM_TOKEN, CLAIM_UNTIL, INFERENCE_TOKEN),
            add={FAILURES if failed else RELEASES: 1})

    def redrive(self, record: JobRecord, send: Callable[[WorkItem], object]) -> bool:
        """Send a fresh copy of a QUEUED job's stored work item, or of a RUNNING job's whose attempt died (the
        notifier, for an item SQS moved to the DLQ; the sweeper, for one that is gone). A copy too many is
        harmless: the claim lets one delivery run the job. False: nothing to re-drive."""
        stored = record.attributes.get(WORK_ITEM)
        lapsed = record.state is JobState.RUNNING and record.number(CLAIM_UNTIL) < self._clock()
        if not stored or not (record.state is JobState.QUEUED or lapsed):
            return False
        send(WorkItem.from_json(str(stored)))
        self.store.update(record.job_id, {SWEEP_AT: round(self._clock() + self.policy.stranded_after_seconds, 3),
                                          WORK_ITEM_SENT: True}, add={REDRIVES: 1})
        return True

    def postpone_sweep(self, job_id: str, until: float) -> bool:
        """Look again at `until` (only while the record is still open: a closed one stays out of the index)."""
        return self.store.update(job_id, {SWEEP_AT: round(until, 3)}, condition=Attr(SWEEP_SHARD).exists())

    def close_sweep(self, record: JobRecord) -> bool:
        """A terminal record whose notification went out but whose sweep entry stayed (the mark failed)."""
        if not record.state.is_terminal or record.attributes.get(OUTBOX_SENT) is not True:
            return False
        return self.store.update(record.job_id, {}, condition=Attr(OUTBOX_SENT).eq(True),
                                 remove=(SWEEP_SHARD, SWEEP_AT, OUTBOX_TOKEN))

    def crashed_out(self, record: JobRecord) -> bool:
        """The job's current attempt died, and with it the job's attempts died max_attempts times (a death before
        inference counts half): the next delivery ends it FAILED instead of running it again."""
        if record.state is not JobState.RUNNING or record.number(CLAIM_UNTIL) >= self._clock():
            return False
        crashes, lost = int(record.number(CRASHES)), int(record.number(LOST))
        if _attempt_crashed(record):
            crashes += 1
        else:
            lost += 1
        return crashes + lost / 2 >= self.policy.max_attempts

    # --- the terminal write ------------------------------------------------------------------------
    def finish(self, notification: Notification, state: JobState, *, holder: Holder, claim: Claim | None = None,
               observed: JobRecord | None = None, attributes: Mapping[str, Any] | None = None) -> Finish:
        """Make the job terminal with its notification stored, then publish it. Only the winner publishes.

        Holder.ABANDONED with `observed`: only if the record is still as observed (QUEUED, or the same dead
        attempt); a crashed attempt's death is counted in the same write."""
        if not state.is_terminal:
            raise ValueError(f"{state} is not a terminal state")
        text = notification.to_json()
        validate_notification(json.loads(text))  # a contract break is our bug: never make it terminal with it
        now, iso, token = self._clock(), utc_now_iso(), uuid.uuid4().hex
        condition, add = self._terminal_condition(holder, claim, observed)
        won = self.store.update(notification.job_id, {
            **(attributes or {}), "state": str(state), "updated_at": iso, f"{state.lower()}_at": iso,
            OUTBOX_MESSAGE: text, OUTBOX_SENT: False, OUTBOX_TOKEN: token,
            OUTBOX_UNTIL: round(now + OUTBOX_LEASE_SECONDS, 3), SWEEP_AT: round(now + OUTBOX_LEASE_SECONDS + 1, 3),
        }, condition=condition, add=add, remove=(CLAIM_TOKEN,) if claim else ())
        if not won:
            return Finish(won=False, sent=False)
        return Finish(won=True, sent=self._publish(notification.job_id, text, token))

    def resume(self, record: JobRecord) -> bool:
        """Publish the stored notification of a terminal job that was not sent yet. True if one went out now.

        Raises NotificationPending when another delivery holds the outbox (it is publishing right now) or
        the publish fails again: the caller's message is then delivered once more and looks again."""
        text = pending_notification_text(record)
        if text is None:
            return False
        now, token = self._clock(), uuid.uuid4().hex
        taken = self.store.update(record.job_id, {
            OUTBOX_TOKEN: token, OUTBOX_UNTIL: round(now + OUTBOX_LEASE_SECONDS, 3),
            SWEEP_AT: round(now + OUTBOX_LEASE_SECONDS + 1, 3),
        }, condition=Attr(OUTBOX_SENT).eq(False) & (Attr(OUTBOX_UNTIL).not_exists()
                                                     | Attr(OUTBOX_UNTIL).lt(round(now, 3))))
        if not taken:
            raise NotificationPending(f"the notification of job {record.job_id} is being sent elsewhere")
        if not self._publish(record.job_id, text, token):
            raise NotificationPending(f"the notification of job {record.job_id} is still unsent")
        return True

    def _publish(self, job_id: str, text: str, token: str) -> bool:
        """Publish under the outbox lease `token`; True when SNS has it, or another delivery took the outbox over
        (then it is that delivery's to send)."""
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            if attempt > 1:
                self._sleep(0.5 * attempt)
                if not self._renew_outbox(job_id, token):
                    log.warning("the outbox of %s was taken over or sent meanwhile; leaving it to its holder", job_id)
                    return True
            try:
                message_id = self._notifier.publish_text(text)
            except (ClientError, BotoCoreError):
                log.warning("publish %d of %d failed for %s", attempt, PUBLISH_ATTEMPTS, job_id, exc_info=True)
                continue
            self._mark_sent(job_id, message_id)
            return True
        log.error("could not publish the notification of %s; it waits on the record", job_id)
        return False

    def _renew_outbox(self, job_id: str, token: str) -> bool:
        until = round(self._clock() + OUTBOX_LEASE_SECONDS, 3)
        try:
            return self.store.update(job_id, {OUTBOX_UNTIL: until, SWEEP_AT: round(until + 1, 3)},
                                     condition=Attr(OUTBOX_TOKEN).eq(token) & Attr(OUTBOX_SENT).eq(False))
        except (ClientError, BotoCoreError):  # cannot prove the lease is still ours: do not publish again
            log.warning("could not renew the outbox lease of %s", job_id, exc_info=True)
            return False

    def _mark_sent(self, job_id: str, message_id: str) -> None:
        # Only this process knows SNS has the message: try as hard to record it, or the sweeper sends it again.
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                self.store.update(job_id, {OUTBOX_SENT: True, OUTBOX_MESSAGE_ID: message_id},
                                  remove=(OUTBOX_TOKEN, SWEEP_SHARD, SWEEP_AT))
                return
            except (ClientError, BotoCoreError):
                if attempt < PUBLISH_ATTEMPTS:
                    self._sleep(0.5 * attempt)
        log.warning("notification of %s published but not marked sent (another identical copy may follow)", job_id)

    # --- the HTTP API's jobs (functions/api) ----------------------------------------------------------
    def await_upload(self, *, job_id: str, input_bucket: str, input_key: str, upload_until: float,
                     attributes: Mapping[str, Any]) -> bool:
        """Record a job the HTTP API created: AWAITING_UPLOAD until its upload (to `input_key`, by the epoch
        second `upload_until`) arrives; the sweeper ends it UPLOAD_ARRIVAL_GRACE_SECONDS after that if none came.
        False if the id is taken."""
        sweep_in = upload_until - self._clock() + UPLOAD_ARRIVAL_GRACE_SECONDS
        return self.store.create(job_id=job_id, dedupe="", input_bucket=input_bucket, input_key=input_key,
                                 state=JobState.AWAITING_UPLOAD, attributes={
                                     **attributes, UPLOAD_UNTIL: round(upload_until, 3),
                                     **self._open(job_id, sweep_in)})

    def accept_upload(self, job_id: str, *, dedupe: str, attributes: Mapping[str, Any]) -> bool:
        """AWAITING_UPLOAD -> ACCEPTED: intake received the job's upload (the first to arrive wins), and from now
        on the record is swept as any ACCEPTED one."""
        iso = utc_now_iso()
        return self.store.update(job_id, {
            **attributes, "dedupe_key": dedupe, "state": str(JobState.ACCEPTED), "updated_at": iso,
            "accepted_at": iso, **self._open(job_id, self.policy.stale_accepted_seconds),
        }, condition=Attr("state").eq(str(JobState.AWAITING_UPLOAD)))

    def cancel(self, record: JobRecord) -> Finish:
        """CANCELLED with one upscale.cancelled, while no worker has the job (else `won` is False). A work item
        already on the queue then finds the job terminal and is dropped."""
        attrs, options = record.attributes, record.options
        notification = Notification(
            event_type=EventType.CANCELLED, job_id=record.job_id,
            input=ImageInfo(record.input_bucket, record.input_key, positive_or_none(attrs.get("input_width")),
                            positive_or_none(attrs.get("input_height")), attrs.get("input_format")),
            model=str(options.model), scale=options.scale, strength=options.strength, error=CANCELLED_ERROR)
        return self.finish(notification, JobState.CANCELLED, holder=Holder.CALLER, attributes={
            "error_code": CANCELLED_ERROR.code, "error_message": CANCELLED_ERROR.message})

    # --- conditions ------------------------------------------------------------------------------------
    def _open(self, job_id: str, sweep_in: float) -> dict[str, Any]:
        return {SWEEP_SHARD: sweep_shard(job_id), SWEEP_AT: round(self._clock() + sweep_in, 3)}

    def _held_by(self, claim: Claim) -> ConditionBase:
        return Attr("state").eq(str(JobState.RUNNING)) & Attr(CLAIM_TOKEN).eq(claim.token)

    def _lapsed(self, record: JobRecord) -> ConditionBase:
        """Still RUNNING under the same (dead) attempt whose lease ran out."""
        return (Attr("state").eq(str(JobState.RUNNING)) & Attr(CLAIM_TOKEN).eq(record.attributes.get(CLAIM_TOKEN))
                & Attr(CLAIM_UNTIL).lt(round(self._clock(), 3)))

    def _terminal_condition(self, holder: Holder, claim: Claim | None,
                            observed: JobRecord | None) -> tuple[ConditionBase, dict[str, int]]:
        if holder is Holder.CLAIM:
            if claim is None:
                raise ValueError("a claim's terminal write needs the claim")
            return self._held_by(claim), {}
        if holder is Holder.INTAKE:
            return Attr("state").eq(str(JobState.ACCEPTED)), {}
        if holder is Holder.CALLER:
            return Attr("state").is_in([str(s) for s in CANCELLABLE_STATES]), {}
        if observed is not None and observed.state is JobState.RUNNING:
            return self._lapsed(observed), {CRASHES if _attempt_crashed(observed) else LOST: 1}
        if observed is not None and observed.state in (JobState.QUEUED, JobState.AWAITING_UPLOAD):
            return Attr("state").eq(str(observed.state)), {}
        if observed is not None:
            raise ValueError(f"an abandoned job is AWAITING_UPLOAD, QUEUED or RUNNING, not {observed.state}")
        queued = Attr("state").eq(str(JobState.QUEUED))
        return queued | (Attr("state").eq(str(JobState.RUNNING)) & (
            Attr(CLAIM_UNTIL).not_exists() | Attr(CLAIM_UNTIL).lt(round(self._clock(), 3)))), {}


UPLOAD_UNTIL = "upload_until"  # epoch seconds: an HTTP API job's upload link works until then
# How long after its link expired an API job still waits for its upload: one that reached S3 in time may sit
# in the intake queue for a while (batching, retries). Then the sweeper ends it (common.abandoned).
UPLOAD_ARRIVAL_GRACE_SECONDS = 900
CANCELLABLE_STATES = (JobState.AWAITING_UPLOAD, JobState.ACCEPTED, JobState.QUEUED)
CANCELLED_ERROR = ErrorInfo(code="CANCELLED", message="The job was cancelled by its caller before a worker took it.",
                            retryable=False)


def stored_notification(record: JobRecord) -> dict[str, Any] | None:
    """The terminal notification stored with a terminal job (sent or not), or None."""
    text = record.attributes.get(OUTBOX_MESSAGE)
    return dict(json.loads(str(text))) if record.state.is_terminal and text else None


class NotificationPending(RuntimeError):
    """A terminal job's notification could not be published yet; deliver the triggering message again."""


def _attempt_crashed(record: JobRecord) -> bool:
    """The record's current (lapsed) attempt had started inference when it died."""
    token = record.attributes.get(CLAIM_TOKEN)
    return bool(token) and record.attributes.get(INFERENCE_TOKEN) == token


def pending_notification_text(record: JobRecord) -> str | None:
    """The stored terminal notification of `record`, exactly as published, if it has not been sent yet."""
    attrs = record.attributes
    if record.state.is_terminal and attrs.get(OUTBOX_SENT) is False and attrs.get(OUTBOX_MESSAGE):
        return str(attrs[OUTBOX_MESSAGE])
    return None


def pending_notification(record: JobRecord) -> dict[str, Any] | None:
    """The stored terminal notification of `record` if it has not been sent yet, else None."""
    text = pending_notification_text(record)
    return dict(json.loads(text)) if text is not None else None


def due_for_sweep(store: JobStore, now: float, *, limit: int = 1000) -> list[str]:
    """Job ids whose sweep time has come, from every shard of the sweep index (oldest first per shard)."""
    found: list[str] = []
    for shard in SWEEP_SHARDS:
        found.extend(store.query_below(SWEEP_INDEX, SWEEP_SHARD, shard, SWEEP_AT, now, limit=limit - len(found)))
        if len(found) >= limit:
            break
    return found
