"""The intake of one uploaded object version: validate cheaply, record the job once, submit or reject.

Order (cheapest first, so a bad upload costs almost nothing):
  HEAD -> size limit -> ranged GET of the header -> dimension/output/animation limits
  -> job record (conditional create: duplicates stop here) -> full GET + decode -> submit | reject.

Exactly one job per object version: the job id is derived from the version (common.jobs), the
record is created with a conditional write, and every state change is conditional. Any exception
(throttling, DynamoDB, Batch, SNS) propagates so the SQS message is retried; the retry finds the
record and carries on from where the last attempt stopped.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from common import aws
from common.contract import (
    ErrorInfo,
    EventType,
    FailureCode,
    ImageInfo,
    JobOptions,
    JobParameters,
    JobState,
    Notification,
    OutputFormat,
    RejectionCode,
    utc_now_iso,
)
from common.jobs import JobRecord, JobStore, dedupe_key, job_id_for
from common.notify import Notifier, deliver_pending, outbox_attributes, pending_payload, publish_and_mark
from common.settings import Settings
from common.submit import JobSubmitter, make_submitter
from functions.intake.options import InvalidOption, default_options, parse_options
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
_EXTENSIONS = {OutputFormat.JPEG: ".jpg", OutputFormat.PNG: ".png", OutputFormat.WEBP: ".webp"}
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NoSuchVersion", "405", "MethodNotAllowed"})
_MAX_COPY_OBJECT_BYTES = 5 * 1024**3  # larger objects need a multipart copy


class Outcome(enum.StrEnum):
    SUBMITTED = "submitted"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"  # this object version was already handled
    IGNORED = "ignored"  # not an upload we act on (outside the prefix, gone, superseded)


class JobInFlightError(RuntimeError):
    """Another invocation is processing this object version right now: retry the message later."""


@dataclass(frozen=True, slots=True)
class IntakeResult:
    outcome: Outcome
    job_id: str | None
    verdict: Verdict | None = None
    batch_job_id: str | None = None
    bytes_read: int = 0  # object bytes fetched from S3 (HEAD excluded)
    validation_ms: float | None = None  # CPU-side validation time (parse, checks, decode)
    detail: str = ""


def relative_key(key: str, settings: Settings) -> str:
    return key[len(settings.upload_prefix):] if key.startswith(settings.upload_prefix) else key


def output_key_for(key: str, output_format: OutputFormat, settings: Settings) -> str:
    """outputs/<key relative to the upload prefix, extension replaced by the output format's>."""
    rel = relative_key(key, settings)
    folder, _, name = rel.rpartition("/")
    stem, dot, _ext = name.rpartition(".")
    base = stem if dot and stem else name
    return f"{settings.output_prefix}{folder + '/' if folder else ''}{base}{_EXTENSIONS[output_format]}"


def rejected_key_for(key: str, settings: Settings) -> str:
    return settings.rejected_prefix + relative_key(key, settings)


@dataclass
class _Reads:
    """Bytes fetched and time validated for one object (reported in the result and metrics)."""

    bytes: int = 0
    validation_s: float = 0.0


class Intake:
    def __init__(self, settings: Settings, *, s3: Any, store: JobStore, submitter: JobSubmitter,
                 notifier: Notifier, lease_seconds: int = DEFAULT_LEASE_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._s3 = s3
        self._store = store
        self._submitter = submitter
        self._notifier = notifier
        self._lease_seconds = lease_seconds
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> Intake:
        return cls(
            settings,
            s3=aws.client("s3", settings),
            store=JobStore(dynamodb_client=aws.client("dynamodb", settings), table_name=settings.jobs_table,
                           ttl_days=settings.job_record_ttl_days),
            submitter=make_submitter(settings),
            notifier=Notifier(sns_client=aws.client("sns", settings), topic_arn=settings.topic_arn,
                              upload_prefix=settings.upload_prefix),
        )

    # --- the one entry point ---------------------------------------------------------------------

    def process(self, event: UploadEvent) -> IntakeResult:
        s = self._settings
        if not event.key.startswith(s.upload_prefix) or event.key.endswith("/"):
            return IntakeResult(Outcome.IGNORED, None, detail=f"key outside {s.upload_prefix!r} or a folder marker")
        job_id = job_id_for(dedupe_key(event.bucket, event.key, event.version_id, event.etag, event.size))

        # A redelivered event usually finds its record already past ACCEPTED: skip the S3 reads.
        existing = self._store.get(job_id)
        if existing is not None and existing.state is not JobState.ACCEPTED:
            return self._already_handled(existing, event)
        if existing is not None and self._clock() < float(existing.attributes.get("lease_until") or 0):
            raise JobInFlightError(f"job {job_id} is being processed by another invocation; retry later")

        head = self._head(event)
        if head is None:
            if existing is not None:  # accepted earlier, then the upload vanished before it was submitted
                return self._fail_missing_input(existing, event)
            return IntakeResult(Outcome.IGNORED, job_id, detail="object no longer exists or was replaced")
        size = int(head["ContentLength"])
        reads = _Reads()

        parsed = parse_options(head.get("Metadata") or {}, s)
        options = parsed if isinstance(parsed, JobOptions) else default_options(s)
        header: ImageHeader | None = None
        head_bytes = b""
        if isinstance(parsed, InvalidOption):
            verdict: Verdict | None = reject(RejectionCode.INVALID_OPTION, parsed.message)
        elif size == 0:
            verdict = reject(RejectionCode.EMPTY_FILE, "The file is empty.")
        elif size > s.max_upload_bytes:
            verdict = file_too_large(size, s)
        else:
            verdict, header, head_bytes = self._check_header(event, size, options, reads)

        if not self._claim(job_id, event, size, options, verdict):
            record = self._store.get(job_id)
            assert record is not None
            return self._already_handled(record, event)

        try:
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
                return self._submit(job_id, event, options, verdict, reads)
            return self._reject(job_id, event, options, verdict, reads)
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
        while True:
            started = time.perf_counter()
            found = read_header(head, complete=len(head) >= size)
            if isinstance(found, ImageHeader):
                verdict = check_header(found, file_size=size, options=options, settings=s)
                reads.validation_s += time.perf_counter() - started
                return verdict, found, head
            reads.validation_s += time.perf_counter() - started
            if isinstance(found, Verdict):
                return found, None, head
            assert isinstance(found, NeedMoreBytes)
            if len(head) >= cap:
                return None, None, head
            want = min(cap, max(found.at_least, 2 * len(head)))
            head += self._read(event, len(head), want, reads)

    # --- the job record ----------------------------------------------------------------------------

    def _claim(self, job_id: str, event: UploadEvent, size: int, options: JobOptions,
               verdict: Verdict | None) -> bool:
        """Create the ACCEPTED record, or take over one whose creator crashed. False: a duplicate."""
        now = self._clock()
        attributes = {
            "input_version": event.version_id,
            "input_etag": (event.etag or "").strip('"') or None,
            "input_size": size,
            "upload_event_time": event.event_time or None,
            "options": options.to_dict(),
            "lease_until": int(now) + self._lease_seconds,
        }
        if verdict is not None and verdict.format:
            attributes.update(input_format=verdict.format, input_width=verdict.width, input_height=verdict.height)
        dedupe = dedupe_key(event.bucket, event.key, event.version_id, event.etag, event.size)
        if self._store.create(job_id=job_id, dedupe=dedupe, input_bucket=event.bucket, input_key=event.key,
                              attributes=attributes):
            return True
        record = self._store.get(job_id)
        if record is None or record.state is not JobState.ACCEPTED:
            return False
        if now < float(record.attributes.get("lease_until") or 0):
            raise JobInFlightError(f"job {job_id} is being processed by another invocation; retry later")
        log.warning("job %s was left ACCEPTED by an earlier attempt; taking it over", job_id)
        self._store.update_attributes(job_id, {"lease_until": int(now) + self._lease_seconds})
        return True

    def _release(self, job_id: str) -> None:
        """After a failed attempt, let the retry take the record over at once."""
        try:
            self._store.update_attributes(job_id, {"lease_until": 0})
        except Exception:  # the lease simply expires
            log.warning("could not release the lease of job %s", job_id, exc_info=True)

    def _already_handled(self, record: JobRecord, event: UploadEvent) -> IntakeResult:
        """A duplicate event. A terminal write whose tail (delete, notification) did not finish is finished here."""
        payload = pending_payload(record)
        if payload is not None:
            if self._clock() < float(record.attributes.get("lease_until") or 0):
                raise JobInFlightError(f"job {record.job_id} is being finished elsewhere")
            if record.state is JobState.REJECTED:
                self._finish_rejection(record.job_id, event, payload)
                return IntakeResult(Outcome.REJECTED, record.job_id, detail="finished an interrupted rejection")
            deliver_pending(record, notifier=self._notifier, store=self._store)
            return IntakeResult(Outcome.DUPLICATE, record.job_id, detail="sent a notification left unsent")
        return IntakeResult(Outcome.DUPLICATE, record.job_id, detail=f"job already {record.state}")

    def _fail_missing_input(self, record: JobRecord, event: UploadEvent) -> IntakeResult:
        """An ACCEPTED job whose upload was deleted before submission: FAILED, and say so once."""
        if self._clock() < float(record.attributes.get("lease_until") or 0):
            raise JobInFlightError(f"job {record.job_id} is being processed by another invocation; retry later")
        message = "The upload was deleted or replaced before it could be processed."
        options = record.options
        notification = Notification(
            event_type=EventType.FAILED, job_id=record.job_id, input=ImageInfo(event.bucket, event.key),
            model=str(options.model), scale=options.scale,
            error=ErrorInfo(code=str(FailureCode.INPUT_MISSING), message=message, retryable=False))
        won = self._store.transition(record.job_id, JobState.FAILED, sources=frozenset({JobState.ACCEPTED}),
                                     attributes={**outbox_attributes(notification),
                                                 "error_code": str(FailureCode.INPUT_MISSING),
                                                 "error_message": message})
        if won:
            publish_and_mark(record.job_id, notification.to_dict(), notifier=self._notifier, store=self._store)
        return IntakeResult(Outcome.IGNORED if won else Outcome.DUPLICATE, record.job_id, detail=message)

    # --- outcomes ----------------------------------------------------------------------------------

    def _submit(self, job_id: str, event: UploadEvent, options: JobOptions, verdict: Verdict,
                reads: _Reads) -> IntakeResult:
        s = self._settings
        out_format = OutputFormat(verdict.output_format)
        params = JobParameters(
            job_id=job_id,
            input_bucket=event.bucket,
            input_key=event.key,
            input_version=event.version_id,
            output_bucket=s.output_bucket,
            output_key=output_key_for(event.key, out_format, s),
            options=dataclasses.replace(options, output_format=out_format),  # resolved: the worker need not guess
            submitted_at=utc_now_iso(),
        )
        batch_job_id = self._submitter.submit(params)
        won = self._store.transition(job_id, JobState.SUBMITTED, attributes={
            "batch_job_id": batch_job_id,
            "output_bucket": params.output_bucket,
            "output_key": params.output_key,
            "options": params.options.to_dict(),
            "input_format": verdict.format,
            "input_width": verdict.width,
            "input_height": verdict.height,
            "intake_warnings": list(verdict.warnings),  # for the worker to add to upscale.succeeded
        })
        result = IntakeResult(Outcome.SUBMITTED, job_id, verdict, batch_job_id, reads.bytes,
                              reads.validation_s * 1000)
        if not won:
            log.error("job %s left ACCEPTED before our submit recorded; Batch job %s may be a duplicate "
                      "(the worker's conditional RUNNING write keeps it from running twice)", job_id, batch_job_id)
            return dataclasses.replace(result, outcome=Outcome.DUPLICATE, detail="lost the SUBMITTED write")
        return result

    def _reject(self, job_id: str, event: UploadEvent, options: JobOptions, verdict: Verdict,
                reads: _Reads) -> IntakeResult:
        """Copy to rejected/, record REJECTED (the winner notifies), then delete the upload."""
        s = self._settings
        rejected_key = rejected_key_for(event.key, s)
        self._copy_to_rejected(event, rejected_key)
        assert verdict.code is not None
        notification = Notification(
            event_type=EventType.REJECTED,
            job_id=job_id,
            input=ImageInfo(bucket=event.bucket, key=event.key, width=_positive(verdict.width),
                            height=_positive(verdict.height), format=verdict.format),
            model=str(options.model),
            scale=options.scale,
            error=ErrorInfo(code=str(verdict.code), retryable=False,
                            message=f"{verdict.message} The file was moved to s3://{event.bucket}/{rejected_key}."),
            warnings=tuple(verdict.warnings),
        )
        won = self._store.transition(job_id, JobState.REJECTED, attributes={
            **outbox_attributes(notification),
            "error_code": str(verdict.code),  # same names as the worker's and notifier's FAILED records
            "error_message": verdict.message,
            "rejected_key": rejected_key,
            "input_format": verdict.format,
            "input_width": verdict.width,
            "input_height": verdict.height,
            "intake_warnings": list(verdict.warnings),
        })
        result = IntakeResult(Outcome.REJECTED, job_id, verdict, None, reads.bytes,
                              reads.validation_s * 1000 if reads.validation_s else None)
        if not won:
            return dataclasses.replace(result, outcome=Outcome.DUPLICATE, detail="another attempt decided first")
        self._finish_rejection(job_id, event, notification.to_dict())
        return result

    def _finish_rejection(self, job_id: str, event: UploadEvent, payload: Mapping[str, Any]) -> None:
        """Idempotent tail of a rejection: remove the upload (its copy exists), then send the stored notification."""
        self._delete_upload(event)
        publish_and_mark(job_id, payload, notifier=self._notifier, store=self._store)

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


def _positive(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and value > 0 else None
