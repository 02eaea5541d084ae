"""One delivery of a work item through `process_delivery`: what is written, what is said, what becomes of it."""

from __future__ import annotations

import io
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import requests
from PIL import Image
from pipeline_world import PipelineWorld

from common.contract import ATTR_EVENT_TYPE, JobState, WorkItem, validate_notification
from common.lifecycle import OUTBOX_LEASE_SECONDS
from common.work_queue import Delivery
from gpu_batch.engine import OutputNotEncodableError
from gpu_batch.worker.errors import JobInterrupted
from gpu_batch.worker.item import Disposition, process_delivery

FAST = {"model": "animevideov3", "scale": "2"}


def queued(world: PipelineWorld, key: str, data: bytes, metadata: dict[str, str] | None = None) -> WorkItem:
    """An upload taken through the real intake: its job QUEUED, its item on the work queue."""
    event = world.upload(key, data, metadata or FAST)
    world.run_intake(event)
    record = world.record(event)
    assert record is not None and record.state is JobState.QUEUED, record
    return WorkItem.from_json(str(record.attributes["work_item"]))


def deliver(world: PipelineWorld) -> tuple[Disposition, Delivery]:
    delivery = world.queue.receive(wait_seconds=0, visibility_seconds=30)
    assert delivery is not None
    return process_delivery(world.worker, delivery), delivery


def test_success_writes_output_record_and_one_valid_notification(world: PipelineWorld, kit) -> None:
    item = queued(world, "uploads/album/cat.png", kit.image(24, 16))
    disposition, _ = deliver(world)
    assert disposition is Disposition.DONE
    assert world.engine.preloaded == ["animevideov3"]

    head = world.raw_s3.head_object(Bucket=item.output_bucket, Key=item.output_key)
    assert head["ContentType"] == "image/png"
    meta = head["Metadata"]
    assert (meta["source-key"], meta["source-version"]) == ("uploads/album/cat.png", item.input_version)
    assert (meta["model"], meta["scale"], meta["output-width"], meta["output-height"]) == ("animevideov3", "2.0",
                                                                                          "48", "32")
    body = world.raw_s3.get_object(Bucket=item.output_bucket, Key=item.output_key)["Body"].read()
    assert Image.open(io.BytesIO(body)).size == (48, 32)

    record = world.raw_store.get(item.job_id)
    assert record.state is JobState.SUCCEEDED and record.attributes["attempts"] == 1
    assert set(record.attributes["durations"]) >= {"claim", "download", "inference", "upload", "item", "total"}
    assert "claim_token" not in record.attributes

    (note,) = world.notifications()
    payload = note["payload"]
    validate_notification(payload)
    assert note["MessageAttributes"][ATTR_EVENT_TYPE]["Value"] == "upscale.succeeded"
    assert payload["input"]["format"] == "png" and payload["output"]["width"] == 48
    url = payload["presigned_url"]
    query = parse_qs(urlsplit(url).query)
    assert query["versionId"] == [head["VersionId"]]
    expires_at = world.clock.now() + timedelta(seconds=world.settings.presigned_url_expiry_seconds)
    assert payload["presigned_url_expires_at"] == expires_at.isoformat(timespec="seconds").replace("+00:00", "Z")
    assert requests.get(url, timeout=10).content == body  # moto's in-process HTTP mock serves it


def test_the_item_decides_the_format_and_intake_warnings_reach_the_notification(world: PipelineWorld, kit) -> None:
    item = queued(world, "uploads/фото 1.jpg", kit.image(20, 20, "JPEG"), {**FAST, "format": "webp",
                                                                          "strength": "0.5"})
    assert item.output_key.endswith(".webp")
    deliver(world)
    call = world.engine.calls[0]
    assert (call["output_format"], call["strength"], world.engine.qualities) == ("webp", 0.5, [95])
    head = world.raw_s3.head_object(Bucket=item.output_bucket, Key=item.output_key)
    assert head["ContentType"] == "image/webp"
    assert head["Metadata"]["source-key"] == "uploads/%D1%84%D0%BE%D1%82%D0%BE 1.jpg"
    assert head["Metadata"]["strength"] == "0.5"
    assert world.notifications()[0]["payload"]["strength"] == 0.5


def test_intake_warnings_travel_with_the_item(world: PipelineWorld, kit) -> None:
    world.store.create(job_id="warned", dedupe="d", input_bucket=world.settings.input_bucket,
                       input_key="uploads/w.png")
    put = world.raw_s3.put_object(Bucket=world.settings.input_bucket, Key="uploads/w.png", Body=kit.image())
    from common.contract import JobOptions, OutputFormat
    item = WorkItem(job_id="warned", input_bucket=world.settings.input_bucket, input_key="uploads/w.png",
                    input_version=put["VersionId"], output_bucket=world.settings.output_bucket,
                    output_key="outputs/w.png", warnings=("only the first frame was upscaled",),
                    options=JobOptions(model="animevideov3", scale=2.0, output_format=OutputFormat.PNG))
    assert world.lifecycle.enqueue(item, world.queue.send)
    deliver(world)
    (note,) = world.notifications()
    assert note["payload"]["warnings"][0] == "only the first frame was upscaled"


def test_undecodable_image_fails_alone_and_permanently(world: PipelineWorld, kit) -> None:
    from gpu_batch.engine import UndecodableImageError

    world.engine.fail_with = UndecodableImageError("bad huffman table")
    item = queued(world, "uploads/bad.png", kit.image())
    disposition, _ = deliver(world)
    assert disposition is Disposition.DONE
    (note,) = world.notifications()
    assert (note["payload"]["event_type"], note["payload"]["error"]["code"]) == ("upscale.failed",
                                                                                 "UNDECODABLE_IMAGE")
    assert world.raw_store.get(item.job_id).state is JobState.FAILED


def test_output_that_cannot_be_encoded_is_permanent(world: PipelineWorld, kit) -> None:
    world.engine.fail_with = OutputNotEncodableError("too wide for WebP")
    queued(world, "uploads/wide.png", kit.image())
    assert deliver(world)[0] is Disposition.DONE
    assert world.notifications()[0]["payload"]["error"]["code"] == "INFERENCE_ERROR"


def test_deleted_input_version_is_input_missing(world: PipelineWorld, kit) -> None:
    item = queued(world, "uploads/gone.png", kit.image())
    world.raw_s3.delete_object(Bucket=item.input_bucket, Key=item.input_key, VersionId=item.input_version)
    assert deliver(world)[0] is Disposition.DONE
    assert world.notifications()[0]["payload"]["error"]["code"] == "INPUT_MISSING"


def test_a_terminal_job_is_not_redone(world: PipelineWorld, kit) -> None:
    queued(world, "uploads/once.png", kit.image())
    _, first = deliver(world)
    world.queue.send_body(first.body)  # SQS delivers the same item again (at least once)
    assert deliver(world)[0] is Disposition.DONE
    assert len(world.engine.calls) == 1 and len(world.notifications()) == 1


def test_a_job_held_by_a_live_worker_is_looked_at_again_later(world: PipelineWorld, kit) -> None:
    item = queued(world, "uploads/held.png", kit.image())
    assert world.lifecycle.claim(item.job_id).claim is not None  # another worker has it
    disposition, _delivery = deliver(world)
    assert disposition is Disposition.RETRY and world.engine.calls == []
    assert world.queue.receive(wait_seconds=0, visibility_seconds=30) is None  # hidden until that lease ends


def test_a_message_that_is_not_a_work_item_is_dropped(world: PipelineWorld) -> None:
    world.sqs.send_message(QueueUrl=world.queue.url, MessageBody='{"hello": "world"}')
    assert deliver(world)[0] is Disposition.DONE


def test_sigterm_during_inference_gives_the_item_back(world: PipelineWorld, kit) -> None:
    def interrupted() -> None:
        raise JobInterrupted("received signal SIGTERM")

    world.engine.during_upscale = interrupted
    item = queued(world, "uploads/spot.png", kit.image())
    assert deliver(world)[0] is Disposition.RELEASED
    record = world.raw_store.get(item.job_id)
    assert record.state is JobState.QUEUED and world.notifications() == []
    world.engine.during_upscale = None
    assert world.lifecycle.claim(item.job_id).claim is not None  # the next worker may take it
    assert world.raw_store.get(item.job_id).number("crashes") == 0  # a give-back spends nothing


def test_a_publish_that_keeps_failing_waits_on_the_record_and_the_redelivery_sends_it(
        world: PipelineWorld, kit, monkeypatch) -> None:
    from botocore.exceptions import ClientError

    notifier = world.lifecycle._notifier
    real = notifier.publish_text

    def down(payload):
        raise ClientError({"Error": {"Code": "Throttling"}}, "Publish")

    monkeypatch.setattr(notifier, "publish_text", down)
    item = queued(world, "uploads/quiet.png", kit.image())
    disposition, delivery = deliver(world)
    assert disposition is Disposition.RETRY
    assert world.raw_store.get(item.job_id).attributes["notified"] is False
    monkeypatch.setattr(notifier, "publish_text", real)
    world.queue.hide(delivery, 0)
    assert deliver(world)[0] is Disposition.RETRY  # within the first publisher's outbox lease: not twice
    world.clock.advance(OUTBOX_LEASE_SECONDS + 1)
    world.queue.hide(delivery, 0)
    assert deliver(world)[0] is Disposition.DONE
    assert len(world.notifications()) == 1 and len(world.engine.calls) == 1
