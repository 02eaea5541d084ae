"""What the HTTP API takes and returns (pydantic): the request checks and the OpenAPI schema come from these.

The models check shape and type only. What an option may be (models, scale and strength bounds, formats) is
decided by intake's own checks (functions.intake.options), so the API refuses exactly what intake would, with
the same sentence; the schema shows the bounds from the same constants.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema

from common.contract import MAX_STRENGTH, MIN_STRENGTH, TERMINAL_EVENTS, JobState, ModelName, OutputFormat
from common.formats import MAX_SCALE, MIN_SCALE

TERMINAL_EVENT_TYPES: list[str] = sorted(str(e) for e in TERMINAL_EVENTS.values())
MAX_FILENAME_LENGTH = 255
MAX_WEBHOOK_URL_LENGTH = 2048  # common.webhook_urls refuses longer ones with a sentence; this bounds the body


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _documented(schema: dict[str, JsonValue]) -> WithJsonSchema:
    """The schema a field shows in the OpenAPI document; the value itself is checked by intake's rules."""
    return WithJsonSchema(schema)


ModelChoice = Annotated[str, _documented({"type": "string", "enum": [m.value for m in ModelName]})]
FormatChoice = Annotated[str, _documented({"type": "string", "enum": [f.value for f in OutputFormat]})]
Scale = Annotated[float, _documented({"type": "number", "minimum": MIN_SCALE, "maximum": MAX_SCALE})]
Strength = Annotated[float, _documented({"type": "number", "minimum": MIN_STRENGTH, "maximum": MAX_STRENGTH})]
EventChoice = Annotated[str, _documented({"type": "string", "enum": list[JsonValue](TERMINAL_EVENT_TYPES)})]


class OptionsIn(_Strict):
    """How to upscale; every field may be left out (the deployment's defaults)."""

    model: ModelChoice | None = Field(None, description="The network (docs/models.md).")
    scale: Scale | None = Field(None, description="Output size over input size.")
    format: FormatChoice | None = Field(None, description="Output format; left out: the same as the input "
                                                          "(HEIC: JPEG).")
    strength: Strength | None = Field(None, description="The network's share; below 1 blends in a Lanczos resize.")


class CreateJobRequest(_Strict):
    filename: str = Field(min_length=1, max_length=MAX_FILENAME_LENGTH,
                          description="The photo's name; the upload lands under uploads/api/<job_id>/<filename>.")
    content_type: str = Field(pattern=r"^[\w.+-]{1,64}/[\w.+-]{1,64}$", examples=["image/jpeg"],
                              description="Bound into the upload; the format is decided by the bytes, not by this.")
    size: int = Field(ge=0, description="Bytes; the upload must be exactly this long.")
    options: OptionsIn = Field(default_factory=OptionsIn)
    webhook_url: str | None = Field(None, max_length=MAX_WEBHOOK_URL_LENGTH,
                                    description="An https URL told of the job's end (Standard Webhooks signatures).")
    webhook_events: list[EventChoice] | None = Field(
        None, max_length=len(TERMINAL_EVENT_TYPES) * 2,
        description="Which events go to webhook_url (default: every terminal event).")


class UploadForm(BaseModel):
    """A presigned POST: send `fields` and then the file (last) as multipart/form-data to `url`."""

    url: str
    fields: dict[str, str]
    expires_at: datetime


class JobCreated(BaseModel):
    job_id: str
    state: JobState
    upload: UploadForm
    expires_at: datetime = Field(description="The upload link works until then.")
    status_url: str


class OptionsView(BaseModel):
    model: str
    scale: float
    format: str | None = Field(description="null: the same as the input (decided when the upload arrives).")
    strength: float


class InputView(BaseModel):
    filename: str | None
    key: str
    size: int | None
    width: int | None
    height: int | None
    format: str | None


class Durations(BaseModel):
    queued: float | None = None
    download: float | None = None
    inference: float | None = None
    upload: float | None = None
    total: float | None = None


class Timings(BaseModel):
    created_at: datetime | None
    accepted_at: datetime | None = None
    queued_at: datetime | None = None
    running_at: datetime | None = None
    finished_at: datetime | None = None
    durations: Durations = Field(default_factory=Durations)


class ErrorView(BaseModel):
    code: str
    message: str
    retryable: bool = False


class ResultView(BaseModel):
    url: str = Field(description="A presigned GET of the result, signed for this response.")
    expires_at: datetime
    width: int | None
    height: int | None
    format: str | None
    bytes: int | None


class WebhookView(BaseModel):
    url: str
    events: list[str]


class JobView(BaseModel):
    job_id: str
    state: JobState
    options: OptionsView
    input: InputView
    timings: Timings
    warnings: list[str]
    error: ErrorView | None
    result: ResultView | None
    webhook: WebhookView | None
    upload_expires_at: datetime | None = Field(None, description="While AWAITING_UPLOAD: the link's end.")


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: no more.")


class Problem(BaseModel):
    """RFC 9457 problem details; `code` is one of intake's RejectionCode values or the API's own."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
