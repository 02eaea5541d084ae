"""The intake of one uploaded object version: validate cheaply, record the job once, queue or reject.

Order (cheapest first, so a bad upload costs almost nothing):
  HEAD -> size limit -> ranged GET of the header -> dimension/output/animation limits
  -> job record (conditional create: duplicates stop here) -> full GET + decode
  -> work item on the work queue + make sure a worker runs | reject.

Exactly one job per object version: the job id is derived from the version (common.jobs), or is the
HTTP API's job that awaits this upload (`_api_upload`); the record is created (or moved from
AWAITING_UPLOAD) with a conditional write, and every state change goes through common.lifecycle.
Any exception (throttling, DynamoDB, SQS, SNS) propagates so the SQS message is retried; the retry
finds the record and carries on from where the last attempt stopped.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from common import aws
from common.api_uploads import JOB_ID_METADATA, job_id_in_key
from common.contract import (
    ErrorInfo,
    EventType,
    FailureCode,
    ImageInfo,
    JobOptions,
    JobState,
    Notification,
    OutputFormat,
    RejectionCode,
    WorkItem,
    positive_or_none,
    utc_now_iso,
)
from common.jobs import JobRecord, dedupe_key, upload_job_id
from common.keys import output_key_for, rejected_key_for
from common.lifecycle import WORK_ITEM_SENT, Holder, JobLifecycle, NotificationPending, pending_notification
from common.scaling import ScaleResult, WorkerScaler
from common.settings import Settings
from common.work_queue import WorkQueue
from functions.intake.options import AskedOptions, InvalidOption, asked_options, default_options, parse_options
from functions.intake.s3_events import UploadEvent
from functions.intake.validation import (
    ImageHeader,
    NeedMoreBytes,
    Verdict,
    check_header,
    decode_check,
    file_too_large,
    read_header,
    reject,
    validate_bytes,
)

log = logging.getLogger(__name__)

# How long a fresh ACCEPTED record belongs to the invocation that created it. A duplicate event
# seen within it is retried later (another invocation is working on it right now); after it, the
# record is taken over (that invocation crashed). Longer than the intake Lambda's timeout.
DEFAULT_LEASE_SECONDS = 300
# The header ranged GET grows (for JPEGs with large EXIF/ICC segments) up to this many times
# settings.header_read_bytes; beyond that the object is read whole (its size is already bounded).
HEADER_READ_GROWTH_CAP = 16
# Ranged GETs away from the start (TIFF IFDs, HEIF boxes after `mdat`) before the object is read whole.
MAX_FAR_READS = 8
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NoSuchVersion", "405", "MethodNotAllowed"})
_MAX_COPY_OBJECT_BYTES = 5 * 1024**3  # larger objects need a multipart copy


class Outcome(enum.StrEnum):
    QUEUED = "queued"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"  # this object version was already handled
    SUPERSEDED = "superseded"  # a newer upload of the same key arrived first: that one owns the output
    IGNORED = "ignored"  # not an upload we act on (outside the prefix, gone, superseded)


class JobInFlightError(RuntimeError):
    """Another invocation is processing this object version right now: retry the message later."""


@dataclass(frozen=True, slots=True)
class IntakeResult:
    outcome: Outcome
    job_id: str | None
    verdict: Verdict | None = None
    workers_started: int = 0
    bytes_read: int = 0  # object bytes fetched from S3 (HEAD excluded)
    validation_ms: float | None = None  # CPU-side validation time (parse, checks, decode)
    detail: str = ""


@dataclass
class _Reads:
    """Bytes fetched and time validated for one object (reported in the result and metrics)."""

    bytes: int = 0
    validation_s: float = 0.0


class Intake:
    def __init__(self, settings: Settings, *, s3: Any, lifecycle: JobLifecycle, work_queue: WorkQueue,
                 scaler: WorkerScaler | None, lease_seconds: int = DEFAULT_LEASE_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._s3 = s3
        self._lifecycle = lifecycle
        self._store = lifecycle.store
        self._queue = work_queue
        self._scaler = scaler
        self._lease_seconds = lease_seconds
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> Intake:
        lifecycle = JobLifecycle.from_settings(settings)
        return cls(
            settings,
            s3=aws.client("s3", settings),
            lifecycle=lifecycle,
            work_queue=WorkQueue(sqs_client=aws.client("sqs", settings), queue_url=settings.work_queue_url),
            scaler=WorkerScaler.from_settings(settings, lifecycle.store),
        )

    # --- the one entry point ---------------------------------------------------------------------

    def process(self, event: UploadEvent, *, lease_seconds: float | None = None) -> IntakeResult:
        """One upload event. `lease_seconds`: how long the record stays this attempt's (default: the
        constructor's); the handler passes the invocation's time left, so a retry after a timeout waits no
        longer than the dead invocation could have run."""
        lease = lease_seconds if lease_seconds is not None else self._lease_seconds
        s = self._settings
        if not event.key.startswith(s.upload_prefix) or event.key.endswith("/"):
            return IntakeResult(Outcome.IGNORED, None, detail=f"key outside {s.upload_prefix!r} or a folder marker")
        job_id = upload_job_id(event.bucket, event.key, event.version_id, event.etag, event.size)

        # A redelivered event usually finds its record already past ACCEPTED: skip the S3 reads.
        job_id, existing, refused = self._api_upload(event, job_id)
        awaiting = existing is not None and existing.state is JobState.AWAITING_UPLOAD
        if existing is not None and existing.state is not JobState.ACCEPTED and not awaiting:
            return self._already_handled(existing, event)
        if existing is not None and self._clock() < float(existing.attributes.get("lease_until") or 0):
            raise JobInFlightError(f"job {job_id} is being processed by another invocation; retry later")

        head = self._head(event)
        if head is None:
            if existing is not None:  # accepted earlier, then the upload vanished before it was submitted
                return self._fail_missing_input(existing, event)
            return IntakeResult(Outcome.IGNORED, job_id, detail="object no longer exists or was replaced")
        newer = None if awaiting else self._newer_version(event)  # an API job's first upload wins (_api_upload)
        size = int(head["ContentLength"])
        reads = _Reads()

        parsed = parse_options(head.get("Metadata") or {}, s)
        options = parsed if isinstance(parsed, JobOptions) else default_options(s)
        header: ImageHeader | None = None
        head_bytes = b""
        if awaiting and (head.get("Metadata") or {}).get(JOB_ID_METADATA) != job_id:
            refused = f"The upload to {event.key} did not come through job {job_id}'s upload link."
        if newer is not None:  # superseded: nothing to validate, no GPU time to spend
            verdict: Verdict | None = None
        elif refused:
            verdict = reject(RejectionCode.UPLOAD_NOT_EXPECTED, refused)
        elif isinstance(parsed, InvalidOption):
            verdict = reject(RejectionCode.INVALID_OPTION, parsed.message)
        elif size == 0:
            verdict = reject(RejectionCode.EMPTY_FILE, "The file is empty.")
        elif size > s.max_upload_bytes:
            verdict = file_too_large(size, s)
        else:
            verdict, header, head_bytes = self._check_header(event, size, options, reads)

        if not self._claim(job_id, event, size, options, verdict, awaiting=awaiting, lease=lease):
            record = self._store.get(job_id)
            assert record is not None
            return self._already_handled(record, event)

        try:
            if newer is not None:
                return self._supersede(job_id, event, options, newer)
            if verdict is None or verdict.accepted:
                # the header GETs already hold the first bytes (all of a small file): fetch only the rest
                data = head_bytes
                if len(data) < size:
                    data += self._read(event, len(data), size, reads)
                started = time.perf_counter()
                if header is None or verdict is None:  # header was not in the first bytes: check it all now
                    verdict = validate_bytes(data, options=options, settings=s)
                else:
                    verdict = decode_check(data, verdict)
                reads.validation_s += time.perf_counter() - started
            if verdict.accepted:
                return self._enqueue(job_id, event, options, verdict, reads)
            return self._reject(job_id, event, asked_options(parsed), verdict, reads)
        except BaseException:
            self._release(job_id)
            raise

    # --- reading ---------------------------------------------------------------------------------

    def _head(self, event: UploadEvent) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"Bucket": event.bucket, "Key": event.key}
        if event.version_id:
            kwargs["VersionId"] = event.version_id
        try:
            head = self._s3.head_object(**kwargs)
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                log.warning("upload %s no longer exists; nothing to do", event.key)
                return None
            raise
        if not event.version_id and event.etag and head.get("ETag", "").strip('"') != event.etag.strip('"'):
            log.warning("upload %s was overwritten since this event; its own event handles it", event.key)
            return None
        return head

    def _newer_version(self, event: UploadEvent) -> str | None:
        """The version id of a newer upload of the same key, if one replaced this version already (the newest
        upload of a key owns its output: an older one is not upscaled at all)."""
        if not event.version_id:
            return None
        try:
            latest = self._s3.head_object(Bucket=event.bucket, Key=event.key)
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:  # the key's newest state is a delete: nothing newer to defer to
                return None
            raise
        current = latest.get("VersionId")
        return str(current) if current and current != event.version_id else None

    def _read(self, event: UploadEvent, start: int, end: int, reads: _Reads) -> bytes:
        """Bytes [start, end) of exactly the version the event names."""
        kwargs: dict[str, Any] = {"Bucket": event.bucket, "Key": event.key, "Range": f"bytes={start}-{end - 1}"}
        if event.version_id:
            kwargs["VersionId"] = event.version_id
        elif event.etag:
            kwargs["IfMatch"] = event.etag
        body = self._s3.get_object(**kwargs)["Body"]
        try:
            data = body.read()
        finally:
            body.close()
        reads.bytes += len(data)
        if len(data) != end - start:
            raise OSError(f"short read of s3://{event.bucket}/{event.key}: {len(data)} of {end - start} bytes")
        return data

    def _check_header(self, event: UploadEvent, size: int, options: JobOptions,
                      reads: _Reads) -> tuple[Verdict | None, ImageHeader | None, bytes]:
        """Dimensions from a ranged GET, grown only while the header is not yet complete.

        Returns (verdict, header, bytes read); verdict and header are None when the header lies
        beyond the growth cap and the whole object must be read to find it.
        """
        s = self._settings
        cap = min(size, s.header_read_bytes * HEADER_READ_GROWTH_CAP)
        head = self._read(event, 0, min(size, s.header_read_bytes), reads)
        far: dict[int, bytes] = {}  # ranges beyond `head` (a TIFF IFD written after the pixels, HEIF boxes)
        while True:
            started = time.perf_counter()
            found = read_header(head, complete=len(head) >= size, far=far, size=size)
            if isinstance(found, ImageHeader):
                verdict = check_header(found, file_size=size, options=options, settings=s)
                reads.validation_s += time.perf_counter() - started
                return verdict, found, head
            reads.validation_s += time.perf_counter() - started
            if isinstance(found, Verdict):
                return found, None, head
            assert isinstance(found, NeedMoreBytes)
            if found.offset > len(head) and len(far) < MAX_FAR_READS and found.at_least <= size:
                end = min(size, max(found.at_least, found.offset + s.header_read_bytes))
                far[found.offset] = self._read(event, found.offset, end, reads)
                continue
            if len(head) >= cap:
                return None, None, head
            want = min(cap, max(found.at_least, 2 * len(head)))
            head += self._read(event, len(head), want, reads)

    # --- the job record ----------------------------------------------------------------------------

    def _claim(self, job_id: str, event: UploadEvent, size: int, options: JobOptions,
               verdict: Verdict | None, *, awaiting: bool = False, lease: float | None = None) -> bool:
        """Create the ACCEPTED record (or, `awaiting`, move the HTTP API's record to ACCEPTED), or take over one
        whose creator crashed. False: a duplicate."""
        now = self._clock()
        lease = self._lease_seconds if lease is None else lease
        attributes = {
            "input_version": event.version_id,
            "input_etag": (event.etag or "").strip('"') or None,
            "input_size": size,
            "upload_event_time": event.event_time or None,
            "input_sequencer": event.sequencer or None,
            "options": options.to_dict(),
            "lease_until": int(now + lease),
        }
        if verdict is not None and verdict.format:
            attributes.update(input_format=verdict.format, input_width=verdict.width, input_height=verdict.height)
        dedupe = dedupe_key(event.bucket, event.key, event.version_id, event.etag, event.size)
        if awaiting and self._lifecycle.accept_upload(job_id, dedupe=dedupe, attributes=attributes):
            return True
        if not awaiting and self._lifecycle.accept(job_id=job_id, dedupe=dedupe, input_bucket=event.bucket,
                                                   input_key=event.key, attributes=attributes):
            return True
        record = self._store.get(job_id)
        if awaiting and record is not None and record.dedupe_key != dedupe:  # another upload won the API's job
            raise JobInFlightError(f"job {job_id} took another upload first; the retry decides this one again")
        if record is None or record.state is not JobState.ACCEPTED:
            return False
        if now < float(record.attributes.get("lease_until") or 0):
            raise JobInFlightError(f"job {job_id} is being processed by another invocation; retry later")
        log.warning("job %s was left ACCEPTED by an earlier attempt; taking it over", job_id)
        self._store.update_attributes(job_id, {"lease_until": int(now + lease)})
        return True

    def _api_upload(self, event: UploadEvent, job_id: str) -> tuple[str, JobRecord | None, str | None]:
        """(job id, its record, why it is refused) of an upload. An upload to the key of a job the HTTP API created
        (common.api_uploads) is that job's while the job awaits it (the first to arrive wins `_claim`'s conditional
        write) or already holds exactly this version (a redelivery). To a job that has another upload, or ended
        without one, it is a job of its own, refused: every uploaded version still ends in one terminal state."""
        api_job = job_id_in_key(event.key, self._settings)
        record = self._store.get(api_job) if api_job else None
        if record is None or record.input_key != event.key:
            return job_id, self._store.get(job_id), None
        if record.state is JobState.AWAITING_UPLOAD or record.dedupe_key == dedupe_key(
                event.bucket, event.key, event.version_id, event.etag, event.size):
            return record.job_id, record, None
        why = (f"job {record.job_id} ended ({record.state}) before it arrived" if not record.dedupe_key
               else f"job {record.job_id} already has its upload, and an upload link takes one file")
        return job_id, self._store.get(job_id), f"This upload is not expected: {why}. Create a new job for it."

    def _release(self, job_id: str) -> None:
        """After a failed attempt, let the retry take the record over at once."""
        try:
            self._store.update_attributes(job_id, {"lease_until": 0})
        except Exception:  # the lease simply expires
            log.warning("could not release the lease of job %s", job_id, exc_info=True)

    def _already_handled(self, record: JobRecord, event: UploadEvent) -> IntakeResult:
        """A duplicate event. Whatever an earlier attempt left unfinished (the work item unsent, the rejected
        upload not yet deleted, the notification unsent) is finished here."""
        unfinished = pending_notification(record) is not None or record.attributes.get(WORK_ITEM_SENT) is False
        if unfinished and self._clock() < float(record.attributes.get("lease_until") or 0):
            raise JobInFlightError(f"job {record.job_id} is being finished by another invocation; retry later")
        if record.state is JobState.QUEUED and self._lifecycle.resend_unsent(record, self._queue.send):
            started = self._ensure_workers()
            return IntakeResult(Outcome.QUEUED, record.job_id, workers_started=started,
                                detail="sent a work item left unsent")
        if record.state is JobState.REJECTED:
            self._delete_upload(event)  # idempotent: the copy in rejected/ was made before the REJECTED write
        if self._lifecycle.resume(record):
            return IntakeResult(Outcome.DUPLICATE, record.job_id, detail="sent a notification left unsent")
        return IntakeResult(Outcome.DUPLICATE, record.job_id, detail=f"job already {record.state}")

    def _fail_missing_input(self, record: JobRecord, event: UploadEvent) -> IntakeResult:
        """An ACCEPTED job whose upload was deleted before it was queued: FAILED, and say so once."""
        if self._clock() < float(record.attributes.get("lease_until") or 0):
            raise JobInFlightError(f"job {record.job_id} is being processed by another invocation; retry later")
        message = "The upload was deleted or replaced before it could be processed."
        options = record.options
        notification = Notification(
            event_type=EventType.FAILED, job_id=record.job_id, input=ImageInfo(event.bucket, event.key),
            model=str(options.model), scale=options.scale,
            error=ErrorInfo(code=str(FailureCode.INPUT_MISSING), message=message, retryable=False))
        finish = self._lifecycle.finish(notification, JobState.FAILED, holder=Holder.INTAKE, attributes={
            "error_code": str(FailureCode.INPUT_MISSING), "error_message": message})
        self._raise_if_unsent(finish.won and not finish.sent, record.job_id)
        return IntakeResult(Outcome.IGNORED if finish.won else Outcome.DUPLICATE, record.job_id, detail=message)

    # --- outcomes ----------------------------------------------------------------------------------

    def _enqueue(self, job_id: str, event: UploadEvent, options: JobOptions, verdict: Verdict,
                 reads: _Reads) -> IntakeResult:
        s = self._settings
        assert verdict.output_format is not None  # check_header resolves it for every accepted image
        out_format = OutputFormat(verdict.output_format)
        item = WorkItem(
            job_id=job_id,
            input_bucket=event.bucket,
            input_key=event.key,
            input_version=event.version_id,
            input_format=verdict.format,
            input_width=positive_or_none(verdict.width),
            input_height=positive_or_none(verdict.height),
            input_sequencer=event.sequencer or None,
            output_bucket=s.output_bucket,
            output_key=output_key_for(event.key, out_format, s),
            options=dataclasses.replace(options, output_format=out_format),  # resolved: the worker need not guess
            warnings=tuple(verdict.warnings),
            enqueued_at=utc_now_iso(),
        )
        won = self._lifecycle.enqueue(item, self._queue.send, attributes={
            "output_bucket": item.output_bucket, "output_key": item.output_key, "options": item.options.to_dict(),
            "input_format": verdict.format, "input_width": verdict.width, "input_height": verdict.height,
            "intake_warnings": list(verdict.warnings),
        })
        result = IntakeResult(Outcome.QUEUED, job_id, verdict, 0, reads.bytes, reads.validation_s * 1000)
        if not won:
            return dataclasses.replace(result, outcome=Outcome.DUPLICATE, detail="another attempt queued it first")
        return dataclasses.replace(result, workers_started=self._ensure_workers())

    def _ensure_workers(self) -> int:
        """One upload on an idle system starts a worker now. A failure here loses nothing: the item waits on
        the queue and the scheduled scaler starts a worker within its period."""
        if self._scaler is None:
            return 0
        try:
            scaled: ScaleResult = self._scaler.ensure(at_least=1)
        except Exception:
            log.warning("could not check the GPU workers; the scheduled scaler will", exc_info=True)
            return 0
        return len(scaled.started)

    def _supersede(self, job_id: str, event: UploadEvent, options: JobOptions, newer: str) -> IntakeResult:
        """A newer upload of the key arrived before this one was queued: SUPERSEDED, no GPU time spent."""
        message = (f"A newer upload of {event.key} (version {newer}) replaced this one before it was processed; "
                   "the newer upload's result will be the key's output.")
        notification = Notification(
            event_type=EventType.SUPERSEDED, job_id=job_id, input=ImageInfo(event.bucket, event.key),
            model=str(options.model), scale=options.scale, strength=options.strength,
            error=ErrorInfo(code="SUPERSEDED", message=message, retryable=False))
        finish = self._lifecycle.finish(notification, JobState.SUPERSEDED, holder=Holder.INTAKE, attributes={
            "error_code": "SUPERSEDED", "error_message": message, "superseded_by_version": newer})
        if not finish.won:
            return IntakeResult(Outcome.DUPLICATE, job_id, detail="another attempt decided first")
        self._raise_if_unsent(not finish.sent, job_id)
        return IntakeResult(Outcome.SUPERSEDED, job_id, detail=message)

    def _reject(self, job_id: str, event: UploadEvent, options: AskedOptions, verdict: Verdict,
                reads: _Reads) -> IntakeResult:
        """Copy to rejected/, record REJECTED with its notification (the winner publishes), delete the upload."""
        s = self._settings
        rejected_key = rejected_key_for(event.key, s)
        self._copy_to_rejected(event, rejected_key)
        assert verdict.code is not None
        notification = Notification(
            event_type=EventType.REJECTED,
            job_id=job_id,
            input=ImageInfo(bucket=event.bucket, key=event.key, width=positive_or_none(verdict.width),
                            height=positive_or_none(verdict.height), format=verdict.format),
            model=options.model,  # as asked (an unknown name too), not the default that would have run
            scale=options.scale,
            error=ErrorInfo(code=str(verdict.code), retryable=False,
                            message=f"{verdict.message} The file was moved to s3://{event.bucket}/{rejected_key}."),
            warnings=tuple(verdict.warnings),
        )
        finish = self._lifecycle.finish(notification, JobState.REJECTED, holder=Holder.INTAKE, attributes={
            "error_code": str(verdict.code),  # same names as the worker's and notifier's FAILED records
            "error_message": verdict.message,
            "rejected_key": rejected_key,
            "input_format": verdict.format,
            "input_width": verdict.width,
            "input_height": verdict.height,
            "intake_warnings": list(verdict.warnings),
        })
        result = IntakeResult(Outcome.REJECTED, job_id, verdict, 0, reads.bytes,
                              reads.validation_s * 1000 if reads.validation_s else None)
        if not finish.won:
            return dataclasses.replace(result, outcome=Outcome.DUPLICATE, detail="another attempt decided first")
        self._delete_upload(event)
        self._raise_if_unsent(not finish.sent, job_id)
        return result

    @staticmethod
    def _raise_if_unsent(unsent: bool, job_id: str) -> None:
        """The terminal write won but SNS did not take the message: fail the SQS record so its redelivery sends it."""
        if unsent:
            raise NotificationPending(f"the notification of job {job_id} is stored but not yet sent")

    def _copy_to_rejected(self, event: UploadEvent, rejected_key: str) -> None:
        source: dict[str, str] = {"Bucket": event.bucket, "Key": event.key}
        if event.version_id:
            source["VersionId"] = event.version_id
        if (event.size or 0) > _MAX_COPY_OBJECT_BYTES:
            self._s3.copy(source, event.bucket, rejected_key)  # managed multipart copy
        else:
            self._s3.copy_object(CopySource=source, Bucket=event.bucket, Key=rejected_key,
                                 MetadataDirective="COPY")

    def _delete_upload(self, event: UploadEvent) -> None:
        """Delete exactly the rejected version: a newer upload of the same key must survive."""
        if event.version_id:
            self._s3.delete_object(Bucket=event.bucket, Key=event.key, VersionId=event.version_id)
        elif self._head(event) is not None:  # unversioned: only while the key still holds our object
            self._s3.delete_object(Bucket=event.bucket, Key=event.key)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
