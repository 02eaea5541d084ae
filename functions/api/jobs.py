"""The HTTP API's operations as plain Python over the job record (common.lifecycle): no Powertools, no HTTP.

A job made here is recorded AWAITING_UPLOAD with its caller, options and webhook, and handed a presigned POST
for exactly one key in the input bucket (common.api_uploads), with the options and the exact size bound into
the signed policy. The upload then flows through the same intake as any other: one pipeline.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from common import aws
from common.api_uploads import JOB_ID_METADATA, new_job_id, safe_filename, upload_key
from common.contract import JobOptions, JobState, RejectionCode
from common.jobs import CALLER_ATTRIBUTE, JobRecord
from common.lifecycle import CANCELLABLE_STATES, UPLOAD_UNTIL, JobLifecycle, NotificationPending, stored_notification
from common.presign import PresignedLink, credential_expiry, presign_get
from common.settings import Settings
from common.webhook_urls import Resolver, UnsafeWebhookUrl, UrlRules, system_resolver
from functions.api.models import (
    TERMINAL_EVENT_TYPES,
    CreateJobRequest,
    Durations,
    ErrorView,
    InputView,
    JobCreated,
    JobList,
    JobView,
    OptionsView,
    ResultView,
    Timings,
    UploadForm,
    WebhookView,
)
from functions.api.problems import ApiErrorCode, ApiProblem, refused
from functions.intake.options import FORMAT_KEY, MODEL_KEY, SCALE_KEY, STRENGTH_KEY, InvalidOption, parse_options
from functions.intake.validation import file_too_large
from functions.webhooks.delivery import WEBHOOK_EVENTS_ATTRIBUTE, WEBHOOK_URL_ATTRIBUTE

# How long a job's upload link works: long enough for a 50 MB photo over a slow link. Shorter when the
# credentials that sign it expire sooner (S3 honours a signature only while its credentials live).
UPLOAD_LINK_SECONDS = 900
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
METADATA_PREFIX = "x-amz-meta-"


class JobsApi:
    def __init__(self, settings: Settings, *, s3: Any, lifecycle: JobLifecycle, webhooks: UrlRules,
                 resolve: Resolver = system_resolver, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._s3 = s3
        self._lifecycle = lifecycle
        self._store = lifecycle.store
        self._webhooks = webhooks
        self._resolve = resolve
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> JobsApi:
        return cls(settings, s3=aws.client("s3", settings), lifecycle=JobLifecycle.from_settings(settings),
                   webhooks=UrlRules.from_settings(settings))

    # --- POST /v1/jobs --------------------------------------------------------------------------------
    def create(self, caller: str, request: CreateJobRequest, *, base_url: str) -> JobCreated:
        s = self._settings
        options = parse_options(_option_metadata(request), s)
        if isinstance(options, InvalidOption):
            raise refused(RejectionCode.INVALID_OPTION, options.message)
        if request.size == 0:
            raise refused(RejectionCode.EMPTY_FILE, "The file is empty.")
        if request.size > s.max_upload_bytes:
            raise refused(RejectionCode.FILE_TOO_LARGE, file_too_large(request.size, s).message)
        webhook_events = self._webhook(request)

        job_id = new_job_id()
        key = upload_key(job_id, request.filename, s)
        now = datetime.fromtimestamp(self._clock(), UTC)
        expires_at = now + timedelta(seconds=UPLOAD_LINK_SECONDS)
        credentials_end = credential_expiry(self._s3)
        if credentials_end is not None:
            expires_at = min(expires_at, credentials_end)
        expires_at = expires_at.replace(microsecond=0)
        bound = {"Content-Type": request.content_type, METADATA_PREFIX + JOB_ID_METADATA: job_id,
                 **{METADATA_PREFIX + k: v for k, v in _resolved_metadata(options).items() if v}}
        self._lifecycle.await_upload(job_id=job_id, input_bucket=s.input_bucket, input_key=key,
                                     upload_until=expires_at.timestamp(), attributes={
                                         CALLER_ATTRIBUTE: caller, "source": "api",
                                         "filename": safe_filename(request.filename), "input_size": request.size,
                                         "content_type": request.content_type, "options": options.to_dict(),
                                         WEBHOOK_URL_ATTRIBUTE: request.webhook_url,
                                         WEBHOOK_EVENTS_ATTRIBUTE: webhook_events})
        post = self._s3.generate_presigned_post(
            Bucket=s.input_bucket, Key=key, Fields=bound,
            Conditions=[*({name: value} for name, value in bound.items()),
                        ["content-length-range", request.size, request.size]],
            ExpiresIn=max(1, int((expires_at - now).total_seconds())))
        return JobCreated(job_id=job_id, state=JobState.AWAITING_UPLOAD,
                          upload=UploadForm(url=post["url"], fields=post["fields"], expires_at=expires_at),
                          expires_at=expires_at, status_url=f"{base_url}/v1/jobs/{job_id}")

    def _webhook(self, request: CreateJobRequest) -> list[str] | None:
        """The events to deliver to the request's webhook (its URL checked once now), or None without one."""
        if request.webhook_url is None:
            if request.webhook_events is not None:
                raise ApiProblem(400, ApiErrorCode.INVALID_REQUEST, "webhook_events needs a webhook_url.")
            return None
        try:
            self._webhooks.check(request.webhook_url, resolve=self._resolve)
        except UnsafeWebhookUrl as exc:
            raise ApiProblem(422, ApiErrorCode.INVALID_WEBHOOK_URL, f"{str(exc)[:1].upper()}{str(exc)[1:]}.") from exc
        events = sorted(set(request.webhook_events if request.webhook_events is not None else TERMINAL_EVENT_TYPES))
        unknown = [e for e in events if e not in TERMINAL_EVENT_TYPES]
        if unknown or not events:
            raise ApiProblem(400, ApiErrorCode.INVALID_REQUEST,
                             f"webhook_events must be some of {', '.join(TERMINAL_EVENT_TYPES)}; got {events}.")
        return events

    # --- GET /v1/jobs/{job_id}, GET /v1/jobs, DELETE /v1/jobs/{job_id} ---------------------------------
    def get(self, caller: str, job_id: str) -> JobView:
        return self._view(self._own(caller, job_id))

    def list(self, caller: str, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None) -> JobList:
        records, last = self._store.by_caller(caller, limit=limit, start=_decode_cursor(cursor, caller))
        return JobList(jobs=[self._view(r) for r in records], next_cursor=_encode_cursor(last) if last else None)

    def cancel(self, caller: str, job_id: str) -> JobView:
        record = self._own(caller, job_id)
        if record.state is JobState.CANCELLED:  # DELETE is idempotent
            return self._view(record)
        if record.state not in CANCELLABLE_STATES:
            raise _not_cancellable(record)
        finish = self._lifecycle.cancel(record)
        after = self._own(caller, job_id)
        if not finish.won and after.state is not JobState.CANCELLED:  # a worker took it (or it ended) in between
            raise _not_cancellable(after)
        if finish.won and not finish.sent:
            with contextlib.suppress(NotificationPending):  # once more now; else it waits for the sweeper
                self._lifecycle.resume(after)
        return self._view(after)

    def _own(self, caller: str, job_id: str) -> JobRecord:
        record = self._store.get(job_id)
        if record is None or record.attributes.get(CALLER_ATTRIBUTE) != caller:
            raise ApiProblem(404, ApiErrorCode.NOT_FOUND, f"There is no job {job_id} of yours.")
        return record

    def _view(self, record: JobRecord) -> JobView:
        link = None
        attrs = record.attributes
        if record.state is JobState.SUCCEEDED and attrs.get("output_key"):
            link = presign_get(self._s3, bucket=str(attrs["output_bucket"]), key=str(attrs["output_key"]),
                               version=attrs.get("output_version"),
                               expires_in=self._settings.presigned_url_expiry_seconds,
                               now=datetime.fromtimestamp(self._clock(), UTC))
        return job_view(record, link)


def job_view(record: JobRecord, link: PresignedLink | None) -> JobView:
    """What a caller sees of its job: the record, and for a terminal job its stored notification."""
    attrs = record.attributes
    options = record.options
    note = stored_notification(record) or {}
    error = note.get("error")
    webhook = attrs.get(WEBHOOK_URL_ATTRIBUTE)
    return JobView(
        job_id=record.job_id, state=record.state,
        options=OptionsView(model=str(options.model), scale=options.scale, strength=options.strength,
                            format=str(options.output_format) if options.output_format else None),
        input=InputView(filename=attrs.get("filename"), key=record.input_key, size=attrs.get("input_size"),
                        width=attrs.get("input_width"), height=attrs.get("input_height"),
                        format=attrs.get("input_format")),
        timings=Timings(created_at=attrs.get("created_at"), accepted_at=attrs.get("accepted_at"),
                        queued_at=attrs.get("queued_at"), running_at=attrs.get("running_at"),
                        finished_at=attrs.get(f"{record.state.lower()}_at") if record.state.is_terminal else None,
                        durations=Durations(**(note.get("durations") or {}))),
        warnings=list(note.get("warnings") or attrs.get("intake_warnings") or []),
        error=ErrorView(**error) if error else None,
        result=ResultView(url=link.url, expires_at=link.expires_at, width=attrs.get("output_width"),
                          height=attrs.get("output_height"), format=attrs.get("output_format"),
                          bytes=attrs.get("output_bytes")) if link else None,
        webhook=WebhookView(url=str(webhook), events=list(attrs.get(WEBHOOK_EVENTS_ATTRIBUTE) or []))
        if webhook else None,
        upload_expires_at=(datetime.fromtimestamp(record.number(UPLOAD_UNTIL), UTC)
                           if record.state is JobState.AWAITING_UPLOAD else None),
    )


def _option_metadata(request: CreateJobRequest) -> dict[str, str]:
    """The options as the S3 user metadata intake reads (functions.intake.options): one parser for both."""
    o = request.options
    return {MODEL_KEY: o.model or "", SCALE_KEY: _number(o.scale), FORMAT_KEY: o.format or "",
            STRENGTH_KEY: _number(o.strength)}


def _resolved_metadata(options: JobOptions) -> dict[str, str]:
    """The job's options, defaults resolved, as the upload's user metadata: fixed when the job is made."""
    return {MODEL_KEY: str(options.model), SCALE_KEY: _number(options.scale), STRENGTH_KEY: _number(options.strength),
            FORMAT_KEY: str(options.output_format) if options.output_format else ""}


def _number(value: float | None) -> str:
    """A number as a person wrote it (4, not 4.0), exactly (no rounding); "" for None."""
    if value is None:
        return ""
    return str(int(value)) if value.is_integer() else repr(value)


def _not_cancellable(record: JobRecord) -> ApiProblem:
    states = ", ".join(str(s) for s in CANCELLABLE_STATES)
    return ApiProblem(409, ApiErrorCode.NOT_CANCELLABLE, f"Job {record.job_id} is {record.state}; only a job no "
                      f"worker has taken ({states}) can be cancelled.", state=str(record.state))


def _encode_cursor(last: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(dict(last), sort_keys=True).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None, caller: str) -> dict[str, Any] | None:
    """The page's start key; only a cursor of the caller's own listing is taken."""
    if not cursor:
        return None
    try:
        start = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise ApiProblem(400, ApiErrorCode.INVALID_CURSOR, "The cursor is not one this API returned.") from exc
    if not isinstance(start, dict) or start.get(CALLER_ATTRIBUTE) != caller or not all(
            isinstance(start.get(k), str) for k in ("job_id", "created_at")):
        raise ApiProblem(400, ApiErrorCode.INVALID_CURSOR, "The cursor is not one this API returned to you.")
    return start
