"""The one contract between the intake Lambda, the Batch worker, the notifier and webhook clients.

Job parameters (what intake hands to Batch and the worker reads), job states, notification
event types, error codes and SNS message attributes are defined here and nowhere else.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_VERSION = "1.1"  # 1.1: event_id; upscale.cancelled and upscale.superseded


class JobState(enum.StrEnum):
    """A job's states; common.lifecycle owns every move between them (its docstring draws the machine)."""

    AWAITING_UPLOAD = "AWAITING_UPLOAD"  # created by the HTTP API; its upload has not arrived yet
    ACCEPTED = "ACCEPTED"  # intake recorded the upload and is deciding
    QUEUED = "QUEUED"  # a work item is on the work queue (or was released back to it)
    RUNNING = "RUNNING"  # a worker holds a claim (token + lease) on it
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"  # its caller cancelled it before a worker took it
    SUPERSEDED = "SUPERSEDED"  # a newer upload of the same key owns the output: this version's is not written

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.REJECTED, JobState.CANCELLED,
                             JobState.SUPERSEDED})


class EventType(enum.StrEnum):
    REJECTED = "upscale.rejected"
    SUCCEEDED = "upscale.succeeded"
    FAILED = "upscale.failed"
    CANCELLED = "upscale.cancelled"
    SUPERSEDED = "upscale.superseded"


# The one terminal event of each terminal state.
TERMINAL_EVENTS = {JobState.SUCCEEDED: EventType.SUCCEEDED, JobState.FAILED: EventType.FAILED,
                   JobState.REJECTED: EventType.REJECTED, JobState.CANCELLED: EventType.CANCELLED,
                   JobState.SUPERSEDED: EventType.SUPERSEDED}


class ModelName(enum.StrEnum):
    X4PLUS = "x4plus"  # RRDBNet, real-world photos (default)
    X4PLUS_ANIME = "x4plus-anime"  # RRDBNet 6 blocks, illustrations
    ANIMEVIDEOV3 = "animevideov3"  # SRVGGNet compact, ~30x cheaper
    PHOTO_JPEG = "photo-jpeg"  # RealSR DF2K-JPEG: JPEG-damaged photos, keeps texture x4plus smooths away
    ILLUSTRATION = "illustration"  # Real-CUGAN SE 2x/3x/4x (network chosen by scale), no denoise
    ILLUSTRATION_CONSERVATIVE = "illustration-conservative"  # Real-CUGAN, changes the least
    ILLUSTRATION_DENOISE = "illustration-denoise"  # Real-CUGAN, strongest denoise


class OutputFormat(enum.StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    AVIF = "avif"
    TIFF = "tiff"


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
    DECODE_TOO_COSTLY = "DECODE_TOO_COSTLY"  # structure (JPEG scans, PNG chunks) beyond any real image
    UPLOAD_NOT_EXPECTED = "UPLOAD_NOT_EXPECTED"  # an HTTP API job's upload link used again, or after its job ended


class FailureCode(enum.StrEnum):
    """Why an accepted job did not produce an output."""

    INPUT_MISSING = "INPUT_MISSING"  # input object deleted/changed before the worker ran
    UNDECODABLE_IMAGE = "UNDECODABLE_IMAGE"  # permanent: never retried
    OUT_OF_MEMORY = "OUT_OF_MEMORY"  # after the engine's own retry with smaller tiles
    INFERENCE_ERROR = "INFERENCE_ERROR"
    STORAGE_ERROR = "STORAGE_ERROR"  # S3 5xx / throttling that outlived retries
    WORKER_CRASHED = "WORKER_CRASHED"  # every attempt killed its worker (OOM kill, signal) before it could report
    TIMED_OUT = "TIMED_OUT"  # no worker finished it within job_deadline_seconds (no GPU capacity, or lost work)
    INTERNAL_ERROR = "INTERNAL_ERROR"


# --- Worker process: how it is started ---------------------------------------------------------
WORKER_MODULE = "gpu_batch.worker"  # `python -m gpu_batch.worker`: container, local Batch and tests
ENV_WORKER_SLOT = "UPSCALER_WORKER_SLOT"  # which worker slot (common.scaling) a Batch job fills
ENV_WORKER_TOKEN = "UPSCALER_WORKER_TOKEN"  # the slot's token: only this worker may renew or free it


# --- SNS message attributes: webhook subscriptions filter on these ---------------------------
ATTR_EVENT_TYPE = "event_type"
ATTR_UPLOAD_PREFIX = "upload_prefix"
ATTR_SCHEMA_VERSION = "schema_version"
ATTR_EVENT_ID = "event_id"  # the notification's stable id: every copy of one notification carries the same


MIN_STRENGTH, MAX_STRENGTH = 0.0, 1.0


def strength_in_range(strength: float) -> bool:
    return MIN_STRENGTH <= strength <= MAX_STRENGTH  # False for NaN


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Per-upload choices (from S3 user metadata, validated by intake)."""

    model: ModelName = ModelName.X4PLUS
    scale: float = 4.0
    output_format: OutputFormat | None = None  # None: follow the input format
    # The network's share of the result, MIN_STRENGTH..MAX_STRENGTH: below 1 it is blended with a faithful
    # Lanczos resize of the input (keeps more of the original's texture; 0 = no network at all).
    strength: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "scale": self.scale,
            "output_format": str(self.output_format) if self.output_format else None,
            "strength": self.strength,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobOptions:
        fmt = data.get("output_format")
        return cls(
            model=ModelName(data.get("model", ModelName.X4PLUS)),
            scale=float(data.get("scale", 4.0)),
            output_format=OutputFormat(fmt) if fmt else None,
            strength=float(data.get("strength", 1.0)),
        )


WORK_ITEM_VERSION = 1


class WorkItemError(ValueError):
    """A work queue message that is not a work item of this version."""


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One accepted upload on the work queue: everything the worker needs, decided once by intake.

    The job record stays the source of truth for the job's state; the item carries the facts so the
    worker neither reads the record for them nor decides a format again.
    """

    job_id: str
    input_bucket: str
    input_key: str
    output_bucket: str
    output_key: str
    options: JobOptions  # output_format resolved by intake
    input_version: str | None = None
    input_format: str | None = None
    input_width: int | None = None
    input_height: int | None = None
    # The S3 event's `sequencer`: orders the versions of one key (common.outputs: the newest owns the output).
    input_sequencer: str | None = None
    warnings: tuple[str, ...] = ()  # intake's, repeated in upscale.succeeded
    enqueued_at: str = ""  # ISO-8601 UTC; lets the worker report time queued

    @property
    def input_uri(self) -> str:
        return f"s3://{self.input_bucket}/{self.input_key}"

    @property
    def output_format(self) -> OutputFormat:
        if self.options.output_format is None:
            raise WorkItemError(f"work item {self.job_id} has no resolved output format")
        return self.options.output_format

    def to_json(self) -> str:
        return json.dumps({
            "version": WORK_ITEM_VERSION,
            "job_id": self.job_id,
            "input": {"bucket": self.input_bucket, "key": self.input_key, "version": self.input_version,
                      "format": self.input_format, "width": self.input_width, "height": self.input_height,
                      "sequencer": self.input_sequencer},
            "output": {"bucket": self.output_bucket, "key": self.output_key},
            "options": self.options.to_dict(),
            "warnings": list(self.warnings),
            "enqueued_at": self.enqueued_at,
        }, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WorkItem:
        try:
            data = json.loads(text)
            if data.get("version") != WORK_ITEM_VERSION:
                raise WorkItemError(f"work item version {data.get('version')!r}, expected {WORK_ITEM_VERSION}")
            source, target = data["input"], data["output"]
            item = cls(
                job_id=str(data["job_id"]),
                input_bucket=str(source["bucket"]), input_key=str(source["key"]),
                input_version=source.get("version") or None, input_format=source.get("format"),
                input_width=source.get("width"), input_height=source.get("height"),
                input_sequencer=source.get("sequencer") or None,
                output_bucket=str(target["bucket"]), output_key=str(target["key"]),
                options=JobOptions.from_dict(data["options"]),
                warnings=tuple(str(w) for w in data.get("warnings") or ()),
                enqueued_at=str(data.get("enqueued_at") or ""),
            )
        except WorkItemError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WorkItemError(f"not a work item: {type(exc).__name__}: {exc}") from exc
        item.output_format  # noqa: B018 - raises WorkItemError when intake did not resolve it
        return item


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


def event_id_for(job_id: str, event_type: EventType | str) -> str:
    """The stable id of a job's terminal notification: a job has one terminal event, so every copy of it
    (a retried publish, a resumed outbox, an SNS redelivery) carries this id, and receivers dedupe on it."""
    digest = hashlib.sha256(f"{job_id}/{EventType(event_type)}".encode()).hexdigest()[:32]
    return f"evt_{digest}"


@dataclass(frozen=True, slots=True)
class Notification:
    """One terminal event of one job, exactly as webhook subscribers receive it.

    `event_id` and `occurred_at` are fixed when the notification is made (the terminal write stores its
    JSON), so every copy that is ever published is byte for byte the same."""

    event_type: EventType
    job_id: str
    input: ImageInfo
    output: ImageInfo | None = None
    presigned_url: str | None = None
    presigned_url_expires_at: str | None = None
    model: str | None = None
    scale: float | None = None
    strength: float | None = None  # the network's share (JobOptions.strength)
    durations: Durations = field(default_factory=Durations)
    error: ErrorInfo | None = None
    warnings: tuple[str, ...] = ()
    occurred_at: str = ""
    event_id: str = ""

    def __post_init__(self) -> None:
        if not self.occurred_at:
            object.__setattr__(self, "occurred_at", utc_now_iso())
        if not self.event_id:
            object.__setattr__(self, "event_id", event_id_for(self.job_id, self.event_type))

    def to_dict(self) -> dict[str, Any]:
        def image(info: ImageInfo | None) -> dict[str, Any] | None:
            if info is None:
                return None
            return {**asdict(info), "uri": info.uri}

        return {
            "schema_version": SCHEMA_VERSION,
            "event_id": self.event_id,
            "event_type": str(self.event_type),
            "job_id": self.job_id,
            "occurred_at": self.occurred_at,
            "input": image(self.input),
            "output": image(self.output),
            "presigned_url": self.presigned_url,
            "presigned_url_expires_at": self.presigned_url_expires_at,
            "model": self.model,
            "scale": self.scale,
            "strength": self.strength,
            "durations": asdict(self.durations),
            "error": asdict(self.error) if self.error else None,
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        return notification_json(self.to_dict())


def notification_json(payload: Mapping[str, Any]) -> str:
    """The one serialisation of a notification: what the outbox stores and SNS carries, byte for byte."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def message_attributes(event_type: str, upload_prefix: str, event_id: str) -> dict[str, dict[str, str]]:
    """SNS MessageAttributes of a notification (subscription filter policies match these; `event_id` is
    the dedupe key, also in the body)."""
    return {
        ATTR_EVENT_ID: {"DataType": "String", "StringValue": event_id},
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
    error = next(iter(_notification_validator().iter_errors(dict(payload))), None)
    if error is not None:
        raise error


@cache
def _notification_validator() -> Any:
    """Built once: jsonschema.validate would check the schema itself again on every call."""
    import jsonschema  # imported lazily: only tests and publishers need it

    schema = notification_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_since(iso: object, now: datetime) -> float | None:
    """Seconds from an ISO-8601 UTC timestamp to `now` (None when absent or unreadable), rounded to ms."""
    if not isinstance(iso, str) or not iso:
        return None
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round(max(0.0, (now - then).total_seconds()), 3) if then.tzinfo else None


def positive_or_none(value: object) -> int | None:
    """A dimension for a notification: a positive int, else None (the schema has no zero-sized images)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
