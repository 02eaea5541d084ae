"""The one contract between the intake Lambda, the Batch worker, the notifier and webhook clients.

Job parameters (what intake hands to Batch and the worker reads), job states, notification
event types, error codes and SNS message attributes are defined here and nowhere else.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_VERSION = "1.0"


class JobState(enum.StrEnum):
    ACCEPTED = "ACCEPTED"
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.REJECTED})

# Which states a job may move to from each state. RUNNING -> RUNNING is a retried Batch attempt.
ALLOWED_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.ACCEPTED: frozenset({JobState.SUBMITTED, JobState.REJECTED, JobState.FAILED}),
    JobState.SUBMITTED: frozenset({JobState.RUNNING, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.REJECTED: frozenset(),
}


def allowed_sources(target: JobState) -> frozenset[JobState]:
    """States from which `target` may be entered (used to build conditional writes)."""
    return frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if target in targets)


class EventType(enum.StrEnum):
    REJECTED = "upscale.rejected"
    SUCCEEDED = "upscale.succeeded"
    FAILED = "upscale.failed"


class ModelName(enum.StrEnum):
    X4PLUS = "x4plus"  # RRDBNet, real-world photos (default)
    X4PLUS_ANIME = "x4plus-anime"  # RRDBNet 6 blocks, illustrations
    ANIMEVIDEOV3 = "animevideov3"  # SRVGGNet compact, ~30x cheaper


class OutputFormat(enum.StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"


class RejectionCode(enum.StrEnum):
    """Why an upload was refused before any GPU time was spent."""

    EMPTY_FILE = "EMPTY_FILE"
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
    CORRUPT_IMAGE = "CORRUPT_IMAGE"
    DECOMPRESSION_BOMB = "DECOMPRESSION_BOMB"
    TOO_MANY_PIXELS = "TOO_MANY_PIXELS"
    SIDE_TOO_LONG = "SIDE_TOO_LONG"
    IMAGE_TOO_SMALL = "IMAGE_TOO_SMALL"
    OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"
    ANIMATED_IMAGE = "ANIMATED_IMAGE"
    INVALID_OPTION = "INVALID_OPTION"


class FailureCode(enum.StrEnum):
    """Why an accepted job did not produce an output."""

    INPUT_MISSING = "INPUT_MISSING"  # input object deleted/changed before the worker ran
    UNDECODABLE_IMAGE = "UNDECODABLE_IMAGE"  # permanent: never retried
    OUT_OF_MEMORY = "OUT_OF_MEMORY"  # after the engine's own retry with smaller tiles
    INFERENCE_ERROR = "INFERENCE_ERROR"
    STORAGE_ERROR = "STORAGE_ERROR"  # S3 5xx / throttling that outlived retries
    SUBMIT_ERROR = "SUBMIT_ERROR"  # Batch refused the job
    INFRASTRUCTURE = "INFRASTRUCTURE"  # spot reclaim, host terminated, image pull failed
    TIMEOUT = "TIMEOUT"
    WORKER_CRASHED = "WORKER_CRASHED"  # killed (OOM kill, signal) before it could report
    INTERNAL_ERROR = "INTERNAL_ERROR"


# --- Worker process: how it is started and what its exit code tells AWS Batch ----------------
WORKER_MODULE = "gpu_batch.worker"  # `python -m gpu_batch.worker`: container, local runner and tests
EXIT_OK = 0  # job finished (SUCCEEDED), or was already terminal: nothing to do
EXIT_PERMANENT_FAILURE = 2  # job marked FAILED and notified by the worker itself: do not retry
EXIT_RETRYABLE = 75  # EX_TEMPFAIL: transient error, job left RUNNING; Batch retries (job definition)
# Anything else (1 for an unhandled crash, 128+N for a signal) is not retried; the notifier
# Lambda (EventBridge "Batch Job State Change" FAILED) then marks the job FAILED and notifies.
BATCH_ATTEMPT_ENV = "AWS_BATCH_JOB_ATTEMPT"  # set by Batch (1-based); the local queue sets it too


# --- SNS message attributes: webhook subscriptions filter on these ---------------------------
ATTR_EVENT_TYPE = "event_type"
ATTR_UPLOAD_PREFIX = "upload_prefix"
ATTR_SCHEMA_VERSION = "schema_version"


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Per-upload choices (from S3 user metadata, validated by intake)."""

    model: ModelName = ModelName.X4PLUS
    scale: float = 4.0
    output_format: OutputFormat | None = None  # None: follow the input format

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "scale": self.scale,
            "output_format": str(self.output_format) if self.output_format else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobOptions:
        fmt = data.get("output_format")
        return cls(
            model=ModelName(data.get("model", ModelName.X4PLUS)),
            scale=float(data.get("scale", 4.0)),
            output_format=OutputFormat(fmt) if fmt else None,
        )


# Environment variable names the worker reads. Batch gets them as containerOverrides.environment,
# the local job queue as the child process environment, tests as a dict.
ENV_JOB_ID = "UPSCALER_JOB_ID"
ENV_INPUT_BUCKET = "UPSCALER_JOB_INPUT_BUCKET"
ENV_INPUT_KEY = "UPSCALER_JOB_INPUT_KEY"
ENV_INPUT_VERSION = "UPSCALER_JOB_INPUT_VERSION"
ENV_OUTPUT_BUCKET = "UPSCALER_JOB_OUTPUT_BUCKET"
ENV_OUTPUT_KEY = "UPSCALER_JOB_OUTPUT_KEY"
ENV_OPTIONS = "UPSCALER_JOB_OPTIONS"  # JSON of JobOptions.to_dict()
ENV_SUBMITTED_AT = "UPSCALER_JOB_SUBMITTED_AT"


@dataclass(frozen=True, slots=True)
class JobParameters:
    """Everything the worker needs to run one job. Built by intake, read by the worker."""

    job_id: str
    input_bucket: str
    input_key: str
    output_bucket: str
    output_key: str
    options: JobOptions = field(default_factory=JobOptions)
    input_version: str | None = None
    submitted_at: str = ""  # ISO-8601 UTC; lets the worker report queueing time

    @property
    def input_uri(self) -> str:
        return f"s3://{self.input_bucket}/{self.input_key}"

    @property
    def output_uri(self) -> str:
        return f"s3://{self.output_bucket}/{self.output_key}"

    def to_environment(self) -> dict[str, str]:
        env = {
            ENV_JOB_ID: self.job_id,
            ENV_INPUT_BUCKET: self.input_bucket,
            ENV_INPUT_KEY: self.input_key,
            ENV_OUTPUT_BUCKET: self.output_bucket,
            ENV_OUTPUT_KEY: self.output_key,
            ENV_OPTIONS: json.dumps(self.options.to_dict(), sort_keys=True),
            ENV_SUBMITTED_AT: self.submitted_at,
        }
        if self.input_version:
            env[ENV_INPUT_VERSION] = self.input_version
        return env

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> JobParameters:
        missing = [k for k in (ENV_JOB_ID, ENV_INPUT_BUCKET, ENV_INPUT_KEY, ENV_OUTPUT_BUCKET, ENV_OUTPUT_KEY)
                   if not env.get(k)]
        if missing:
            raise ValueError(f"job parameters missing from environment: {', '.join(missing)}")
        return cls(
            job_id=env[ENV_JOB_ID],
            input_bucket=env[ENV_INPUT_BUCKET],
            input_key=env[ENV_INPUT_KEY],
            input_version=env.get(ENV_INPUT_VERSION) or None,
            output_bucket=env[ENV_OUTPUT_BUCKET],
            output_key=env[ENV_OUTPUT_KEY],
            options=JobOptions.from_dict(json.loads(env.get(ENV_OPTIONS) or "{}")),
            submitted_at=env.get(ENV_SUBMITTED_AT, ""),
        )


# --- Notification message (schema: common/schemas/notification-v1.json) ----------------------


@dataclass(frozen=True, slots=True)
class ImageInfo:
    bucket: str
    key: str
    width: int | None = None
    height: int | None = None
    format: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True, slots=True)
class Durations:
    """Seconds spent in each phase; None where the phase did not happen."""

    queued: float | None = None
    download: float | None = None
    inference: float | None = None
    upload: float | None = None
    total: float | None = None


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: str
    message: str
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class Notification:
    """One terminal event of one job, exactly as webhook subscribers receive it."""

    event_type: EventType
    job_id: str
    input: ImageInfo
    output: ImageInfo | None = None
    presigned_url: str | None = None
    presigned_url_expires_at: str | None = None
    model: str | None = None
    scale: float | None = None
    durations: Durations = field(default_factory=Durations)
    error: ErrorInfo | None = None
    warnings: tuple[str, ...] = ()
    occurred_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        def image(info: ImageInfo | None) -> dict[str, Any] | None:
            if info is None:
                return None
            return {**asdict(info), "uri": info.uri}

        return {
            "schema_version": SCHEMA_VERSION,
            "event_type": str(self.event_type),
            "job_id": self.job_id,
            "occurred_at": self.occurred_at or utc_now_iso(),
            "input": image(self.input),
            "output": image(self.output),
            "presigned_url": self.presigned_url,
            "presigned_url_expires_at": self.presigned_url_expires_at,
            "model": self.model,
            "scale": self.scale,
            "durations": asdict(self.durations),
            "error": asdict(self.error) if self.error else None,
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def message_attributes(event_type: str, upload_prefix: str) -> dict[str, dict[str, str]]:
    """SNS MessageAttributes of a notification of `event_type` (subscription filter policies match these)."""
    return {
        ATTR_EVENT_TYPE: {"DataType": "String", "StringValue": str(EventType(event_type))},
        ATTR_UPLOAD_PREFIX: {"DataType": "String", "StringValue": upload_prefix},
        ATTR_SCHEMA_VERSION: {"DataType": "String", "StringValue": SCHEMA_VERSION},
    }


@cache
def notification_schema() -> dict[str, Any]:
    """The JSON Schema that every published notification satisfies."""
    text = resources.files("common").joinpath("schemas/notification-v1.json").read_text()
    return json.loads(text)


def validate_notification(payload: Mapping[str, Any]) -> None:
    """Raise jsonschema.ValidationError if `payload` breaks the published contract."""
    import jsonschema  # imported lazily: only tests and publishers need it

    jsonschema.validate(dict(payload), notification_schema())


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
