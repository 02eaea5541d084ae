"""Fixtures for the intake tests: a generated corpus of good and bad files, and a moto AWS.

Every file is made here (Pillow or hand-built bytes), small, once per session.
"""

from __future__ import annotations

import io
import json
import random
import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote_plus

import pytest
from PIL import Image
from sns_capture import capture_topic, drain_notifications

from common import aws
from common.contract import WorkItem
from common.jobs import JobStore
from common.lifecycle import JobLifecycle
from common.notify import Notifier
from common.scaling import WorkerScaler, WorkerSlots
from common.settings import Settings
from common.work_queue import WorkQueue
from functions.intake.intake import Intake
from local_stack.resources import create_bucket, create_jobs_table

# --- corpus ------------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def photo(width: int = 96, height: int = 64, mode: str = "RGB") -> Image.Image:
    """A small image with texture (so lossy codecs produce real entropy-coded data)."""
    rng = random.Random(width * 7919 + height)
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    noise = Image.frombytes("RGB", (width, height), bytes(rng.randrange(256) for _ in range(width * height * 3)))
    return Image.blend(img, noise, 0.3).convert(mode)


def png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def raw_png(width: int, height: int, *, bit_depth: int = 8, colour: int = 2, idat: bytes | None = None,
            extra_chunks: tuple[bytes, ...] = ()) -> bytes:
    """A PNG built by hand: `idat` overrides the compressed data (bombs declare more than they hold)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    if idat is None:
        row = b"\x00" + bytes(width * channels * bit_depth // 8)
        idat = zlib.compress(row * height, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + b"".join(extra_chunks)
            + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def rgb16_png(width: int, height: int) -> bytes:
    rng = random.Random(16)
    rows = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(width * 6)) for _ in range(height))
    return raw_png(width, height, bit_depth=16, colour=2, idat=zlib.compress(rows))


def jpeg_bomb() -> bytes:
    """A real tiny JPEG whose frame header is patched to declare 65000×65000."""
    data = bytearray(encode(photo(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 65_000, 65_000)
    return bytes(data)


def webp_bomb() -> bytes:
    """A lossy WebP whose VP8 frame header declares 16383×16383 (268 MP)."""
    data = bytearray(encode(photo(16, 16), "WEBP", quality=50))
    assert data[12:16] == b"VP8 "
    struct.pack_into("<HH", data, 26, 16_383, 16_383)
    return bytes(data)


def big_exif_jpeg() -> bytes:
    """A JPEG whose frame header lies beyond the first 64 KiB (large EXIF + ICC segments)."""
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription
    icc = bytes(random.Random(3).randrange(256) for _ in range(150_000))
    return encode(photo(), "JPEG", exif=exif.tobytes(), icc_profile=icc)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° CW to display
    return encode(photo(80, 40), "JPEG", exif=exif.tobytes())


def corrupt_crc_png() -> bytes:
    data = bytearray(encode(photo(), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # flip a compressed byte, leave the CRC as it was
    return bytes(data)


def animated(fmt: str) -> bytes:
    frames = [photo(32, 32).point(lambda v, i=i: (v + 60 * i) % 256) for i in range(3)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def make_corpus() -> dict[str, bytes]:
    jpeg = encode(photo(), "JPEG", quality=90)
    png = encode(photo(), "PNG")
    webp = encode(photo(), "WEBP", quality=80)
    rng = random.Random(42)
    return {
        # accepted
        "photo.jpg": jpeg,
        "photo.png": png,
        "photo.webp": webp,
        "progressive.jpg": encode(photo(), "JPEG", progressive=True),
        "gray.jpg": encode(photo(mode="L"), "JPEG"),
        "cmyk.jpg": encode(photo(mode="CMYK"), "JPEG"),
        "alpha.png": encode(photo(mode="RGBA"), "PNG"),
        "alpha.webp": encode(photo(mode="RGBA"), "WEBP", lossless=True),
        "palette.png": encode(photo().convert("P"), "PNG", transparency=0),
        "gray16.png": encode(photo(mode="L").convert("I;16"), "PNG"),
        "rgb16.png": rgb16_png(40, 30),
        "exif_rotated.jpg": exif_rotated_jpeg(),
        "big_exif.jpg": big_exif_jpeg(),
        "long_but_ok.png": raw_png(4000, 8, colour=0),
        # refused
        "empty.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "truncated.webp": webp[: len(webp) // 2],
        "header_only.png": png[:40],
        "corrupt_crc.png": corrupt_crc_png(),
        "random.jpg": bytes(rng.randrange(256) for _ in range(4096)),
        "notes.txt": b"Holiday photos\nTODO: upload the real ones.\n" * 20,
        "drawing.svg": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                       b'<rect width="10" height="10"/></svg>\n',
        "page.html": b"<!DOCTYPE html>\n<html><body><img src='x.png'></body></html>\n",
        "doc.pdf": b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n",
        "still.gif": encode(photo().convert("P"), "GIF"),
        "animated.gif": animated("GIF"),
        "scan.tiff": encode(photo(), "TIFF"),
        "bitmap.bmp": encode(photo(), "BMP"),
        "animated.webp": animated("WEBP"),
        "animated.png": animated("PNG"),
        "bomb.png": raw_png(100_000, 100_000, idat=zlib.compress(b"\x00" * 1000)),
        "bomb.jpg": jpeg_bomb(),
        "bomb.webp": webp_bomb(),
        "too_long_side.png": raw_png(20_000, 8, colour=0),
        "tiny.png": encode(photo(4, 4), "PNG"),
    }


@pytest.fixture(scope="session")
def corpus() -> dict[str, bytes]:
    return make_corpus()


# --- AWS (moto, in-process) ----------------------------------------------------------------------

BUCKET = "upscaler-input-test"
REGION = "us-east-1"


class RecordingQueue(WorkQueue):
    """The real work queue (moto SQS) that also records what was sent; `failures` makes the next sends raise."""

    def __init__(self, *, sqs_client: Any, queue_url: str) -> None:
        super().__init__(sqs_client=sqs_client, queue_url=queue_url)
        self.sent: list[WorkItem] = []
        self.failures: list[BaseException] = []
        self.calls = 0

    def send(self, item: WorkItem) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(item)
        return super().send(item)


@dataclass
class FakeBackend:
    """A WorkerBackend that records the worker jobs it was asked for."""

    started: list[tuple[int, str]] = field(default_factory=list)
    terminated: list[tuple[str, str]] = field(default_factory=list)

    def start(self, slot: int, token: str) -> str:
        self.started.append((slot, token))
        return f"batch-{len(self.started)}"

    def terminate(self, job_id: str, reason: str) -> None:
        self.terminated.append((job_id, reason))

    def jobs_on_instance(self, instance_id: str, job_ids: Sequence[str]) -> list[str]:
        return []


class CountingS3:
    """Wraps the S3 client to count object bytes fetched (GET bodies) and the calls made."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.bytes_read = 0
        self.calls: list[str] = []

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("get_object")
        resp = self._client.get_object(**kwargs)
        self.bytes_read += int(resp["ContentLength"])
        return resp

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if callable(attr):
            def call(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return attr(*args, **kwargs)
            return call
        return attr


@dataclass
class Stack:
    settings: Settings
    s3: CountingS3
    store: JobStore
    work_queue: RecordingQueue
    starter: FakeBackend
    notifier: Notifier
    notifications_queue_url: str
    intake: Intake
    clients: dict[str, Any]

    @property
    def lifecycle(self) -> JobLifecycle:
        return JobLifecycle(store=self.store, notifier=self.notifier)

    @property
    def scaler(self) -> WorkerScaler:
        return WorkerScaler(slots=WorkerSlots(self.store), queue=self.work_queue, backend=self.starter,
                            max_workers=self.settings.max_workers,
                            start_grace_seconds=self.settings.worker_start_grace_seconds)

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        resp = self.clients["s3"].put_object(Bucket=BUCKET, Key=key, Body=data, Metadata=metadata or {})
        head = self.clients["s3"].head_object(Bucket=BUCKET, Key=key)
        return {"key": key, "size": len(data), "eTag": head["ETag"].strip('"'),
                "versionId": resp.get("VersionId")}

    def notifications(self) -> list[dict[str, Any]]:
        """SNS envelopes delivered to the subscribed queue."""
        return drain_notifications(self.clients["sqs"], self.notifications_queue_url)


def build_intake(stack: Stack, settings: Settings | None = None, **kwargs: Any) -> Intake:
    """The stack's Intake (real moto work queue, fake worker starter); kwargs: lease_seconds, clock."""
    return Intake(settings or stack.settings, s3=stack.s3, lifecycle=stack.lifecycle, work_queue=stack.work_queue,
                  scaler=stack.scaler, **kwargs)


@pytest.fixture
def aws_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    aws.clear_cache()
    with mock_aws():
        base = Settings(region=REGION, input_bucket=BUCKET, jobs_table="jobs-test", max_workers=2)
        s3 = aws.client("s3", base)
        create_bucket(s3, BUCKET, REGION)
        ddb = aws.client("dynamodb", base)
        create_jobs_table(ddb, base.jobs_table)
        sns = aws.client("sns", base)
        sqs = aws.client("sqs", base)
        topic_arn, queue_url = capture_topic(sns, sqs, queue_name="webhook-spy")
        work_url = sqs.create_queue(QueueName="work")["QueueUrl"]
        settings = base.replace(topic_arn=topic_arn, work_queue_url=work_url)
        store = JobStore(dynamodb_client=ddb, table_name=settings.jobs_table)
        stack = Stack(settings=settings, s3=CountingS3(s3), store=store,
                      work_queue=RecordingQueue(sqs_client=sqs, queue_url=work_url), starter=FakeBackend(),
                      notifier=Notifier(sns_client=sns, topic_arn=topic_arn, upload_prefix=settings.upload_prefix),
                      notifications_queue_url=queue_url, intake=None,  # type: ignore[arg-type]
                      clients={"s3": s3, "dynamodb": ddb, "sns": sns, "sqs": sqs})
        stack.intake = build_intake(stack)
        yield stack
    aws.clear_cache()


# --- event shapes, exactly as S3 -> SQS -> Lambda delivers them --------------------------------------


def s3_record(obj: dict[str, Any], *, event_name: str = "ObjectCreated:Put", bucket: str = BUCKET) -> dict[str, Any]:
    s3_object = {"key": quote_plus(obj["key"], safe="/"), "size": obj["size"], "eTag": obj["eTag"],
                 "sequencer": obj.get("sequencer", "0062E99A88DC407460")}
    if obj.get("versionId"):
        s3_object["versionId"] = obj["versionId"]
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": REGION,
        "eventTime": "2026-11-26T12:00:00.000Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.10"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "uploads-to-intake",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                       "arn": f"arn:aws:s3:::{bucket}"},
            "object": s3_object,
        },
    }


def sqs_record(body: dict[str, Any] | str, message_id: str | None = None) -> dict[str, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "body": text,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764158400000",
                       "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1764158400001"},
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:upscaler-intake",
        "awsRegion": REGION,
    }


def sqs_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def upload_message(obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return sqs_record({"Records": [s3_record(obj, **kwargs)]})


TEST_EVENT_BODY = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-26T12:00:00.000Z",
                   "Bucket": BUCKET, "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3"}


@dataclass
class FakeLambdaContext:
    function_name: str = "upscaler-intake"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:upscaler-intake"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


@pytest.fixture(scope="session")
def events() -> SimpleNamespace:
    """Builders for the event shapes (fixtures, since test modules cannot import conftest)."""
    return SimpleNamespace(s3_record=s3_record, sqs_record=sqs_record, sqs_event=sqs_event,
                           upload_message=upload_message, test_event_body=TEST_EVENT_BODY)


@pytest.fixture(scope="session")
def builders() -> SimpleNamespace:
    return SimpleNamespace(encode=encode, photo=photo, raw_png=raw_png, png_chunk=png_chunk,
                           build_intake=build_intake)
