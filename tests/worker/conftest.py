"""Moto-backed AWS (S3, DynamoDB, SNS -> SQS capture) and a fast fake engine for worker tests."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from moto import mock_aws
from PIL import Image
from sns_capture import capture_topic, drain_notifications

from common import aws
from common.contract import EventType, JobOptions, JobParameters, JobState, utc_now_iso
from common.jobs import JobStore
from common.notify import Notifier
from common.settings import Settings
from gpu_batch.engine import UpscaleResult
from gpu_batch.engine.codec import CONTENT_TYPES
from gpu_batch.engine.errors import UndecodableImageError
from local_stack.resources import create_bucket, create_jobs_table

_PATH_TO = {
    JobState.ACCEPTED: [],
    JobState.SUBMITTED: [JobState.SUBMITTED],
    JobState.RUNNING: [JobState.SUBMITTED, JobState.RUNNING],
    JobState.SUCCEEDED: [JobState.SUBMITTED, JobState.RUNNING, JobState.SUCCEEDED],
    JobState.FAILED: [JobState.SUBMITTED, JobState.FAILED],
}


@dataclass
class AwsWorld:
    settings: Settings
    s3: Any
    ddb: Any
    sns: Any
    sqs: Any
    store: JobStore
    notifier: Notifier
    queue_url: str

    def notifications(self) -> list[dict[str, Any]]:
        """Every SNS message delivered to the capture queue so far (envelope with parsed payload)."""
        return drain_notifications(self.sqs, self.queue_url)

    def put_input(self, key: str, data: bytes) -> str | None:
        return self.s3.put_object(Bucket=self.settings.input_bucket, Key=key, Body=data).get("VersionId")

    def submitted_job(self, job_id: str, key: str, data: bytes, *, options: JobOptions | None = None,
                      output_key: str | None = None, state: JobState = JobState.SUBMITTED) -> JobParameters:
        """An uploaded input and its job record in `state`, as intake leaves it."""
        version = self.put_input(key, data)
        options = options or JobOptions(model="animevideov3", scale=2.0)
        self.store.create(job_id=job_id, dedupe=f"s3://{self.settings.input_bucket}/{key}#v:{version}",
                          input_bucket=self.settings.input_bucket, input_key=key,
                          attributes={"options": options.to_dict()})
        for step in _PATH_TO[state]:
            assert self.store.transition(job_id, step)
        relative = key.removeprefix(self.settings.upload_prefix).rsplit(".", 1)[0]
        return JobParameters(
            job_id=job_id, input_bucket=self.settings.input_bucket, input_key=key, input_version=version,
            output_bucket=self.settings.output_bucket,
            output_key=output_key or f"{self.settings.output_prefix}{relative}.png",
            options=options, submitted_at=utc_now_iso(),
        )


@pytest.fixture
def world(monkeypatch) -> AwsWorld:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    aws.clear_cache()
    with mock_aws():
        yield make_world(Settings.from_env({}, jobs_table="jobs-test"))
    aws.clear_cache()


@pytest.fixture
def world_factory():
    """Build the same world against another endpoint (e.g. a moto server a subprocess can reach)."""
    aws.clear_cache()
    yield make_world
    aws.clear_cache()


def make_world(base: Settings) -> AwsWorld:
    s3 = aws.client("s3", base)
    for bucket in (base.input_bucket, base.output_bucket):
        create_bucket(s3, bucket, base.region)
    ddb = aws.client("dynamodb", base)
    create_jobs_table(ddb, base.jobs_table)
    sns = aws.client("sns", base)
    sqs = aws.client("sqs", base)
    topic_arn, queue_url = capture_topic(sns, sqs)
    settings = base.replace(topic_arn=topic_arn)
    return AwsWorld(
        settings=settings, s3=s3, ddb=ddb, sns=sns, sqs=sqs,
        store=JobStore(dynamodb_client=ddb, table_name=settings.jobs_table),
        notifier=Notifier(sns_client=sns, topic_arn=topic_arn, upload_prefix=settings.upload_prefix),
        queue_url=queue_url,
    )


def image_bytes(width: int = 24, height: int = 16, fmt: str = "PNG") -> bytes:
    img = Image.new("RGB", (width, height))
    img.putdata([((x * 10) % 256, (y * 15) % 256, 128) for y in range(height) for x in range(width)])
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


@dataclass
class FakeEngine:
    """The Engine API with PIL resizing instead of a network: fast, deterministic, and it can fail on cue."""

    fail_with: BaseException | None = None
    during_upscale: Any = None  # called inside upscale_bytes (to interleave other actors)
    calls: list[dict[str, Any]] = field(default_factory=list)
    preloaded: list[str] = field(default_factory=list)

    def preload(self, model: str) -> None:
        self.preloaded.append(model)

    def provider(self, model: str) -> str:
        return "CPUExecutionProvider"

    def upscale_bytes(self, data: bytes, *, model: str = "x4plus", scale: float = 4.0,
                      output_format: str | None = None, quality: int | None = None, tile_size: int = 0,
                      progress: Any = None) -> UpscaleResult:
        self.calls.append({"model": model, "scale": scale, "output_format": output_format, "quality": quality})
        if self.during_upscale:
            self.during_upscale()
        if self.fail_with is not None:
            raise self.fail_with
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except Exception as exc:
            raise UndecodableImageError(f"cannot decode: {exc}") from exc
        fmt = output_format or ("jpeg" if img.format == "JPEG" else "png")
        out_size = (round(img.width * scale), round(img.height * scale))
        for done in range(1, 5):
            if progress:
                progress(done, 4)
        buf = io.BytesIO()
        img.convert("RGB").resize(out_size).save(buf, fmt.upper(), **({"quality": quality} if quality else {}))
        return UpscaleResult(data=buf.getvalue(), format=fmt, content_type=CONTENT_TYPES[fmt],
                             input_width=img.width, input_height=img.height, output_width=out_size[0],
                             output_height=out_size[1], model=model, scale=scale, provider="CPUExecutionProvider",
                             decode_seconds=0.001, inference_seconds=0.002, encode_seconds=0.001)


def event_types(notes: list[dict[str, Any]]) -> list[str]:
    return [n["payload"]["event_type"] for n in notes]


@pytest.fixture
def kit() -> SimpleNamespace:
    """Helpers for tests (conftest modules are not importable under --import-mode=importlib)."""
    return SimpleNamespace(image=image_bytes, FakeEngine=FakeEngine, event_types=event_types, EventType=EventType)
