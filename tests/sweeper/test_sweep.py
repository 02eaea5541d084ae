"""The sweeper on moto: every open record past its bound is finished or re-driven, and nothing else is touched
(finding 8: nobody retried intake's unfinished work; finding 7: a stranded RUNNING job; finding 9: items
waiting for GPU capacity forever)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fake_engine import image_bytes
from moto import mock_aws
from pipeline_world import PipelineWorld, make_pipeline_world

from common.contract import (
    ErrorInfo,
    EventType,
    ImageInfo,
    JobOptions,
    JobState,
    Notification,
    OutputFormat,
    WorkItem,
)
from common.lifecycle import OUTBOX_LEASE_SECONDS, UNSENT_GRACE_SECONDS, Holder
from functions.intake.s3_events import parse_body
from functions.sweeper.sweep import MAX_INTAKE_REDRIVES, Sweeper
from local_stack.resources import create_queue


@pytest.fixture
def world(aws_creds: None) -> Iterator[PipelineWorld]:
    with mock_aws():
        yield make_pipeline_world()


@pytest.fixture
def sweeper(world: PipelineWorld) -> Sweeper:
    intake_url, _ = create_queue(world.sqs, "intake")
    dlq_url, _ = create_queue(world.sqs, "intake-dlq")
    return Sweeper(lifecycle=world.lifecycle, work_queue=world.queue, sqs=world.sqs, intake_queue_url=intake_url,
                   intake_dlq_url=dlq_url, clock=world.clock.wall)


def later(world: PipelineWorld, seconds: float) -> None:
    world.clock.advance(seconds)


def queued(world: PipelineWorld, name: str = "a.png") -> WorkItem:
    event = world.upload(f"uploads/{name}", image_bytes(), {"model": "animevideov3"})
    world.run_intake(event)
    return WorkItem.from_json(str(world.record(event).attributes["work_item"]))


def test_nothing_is_due_while_jobs_are_young(world: PipelineWorld, sweeper: Sweeper) -> None:
    queued(world)
    assert sweeper.run().looked == 0


def test_an_accepted_upload_whose_intake_died_is_sent_to_intake_again_then_failed(
        world: PipelineWorld, sweeper: Sweeper) -> None:
    event = world.upload("uploads/stuck.png", image_bytes(), {"model": "animevideov3"})
    job_id = world.job_id(event)
    assert world.lifecycle.accept(job_id=job_id, dedupe="d", input_bucket=event.bucket, input_key=event.key,
                                  attributes={"input_version": event.version_id, "input_etag": event.etag,
                                              "input_size": event.size, "lease_until": world.clock.wall() + 30})
    later(world, world.lifecycle.policy.stale_accepted_seconds + 1)
    assert sweeper.run().actions["intake_redriven"] == 1
    (message,) = world.sqs.receive_message(QueueUrl=sweeper._intake_url)["Messages"]
    (upload,) = parse_body(message["Body"])
    assert (upload.key, upload.version_id, upload.etag, upload.size) == (event.key, event.version_id, event.etag,
                                                                          event.size)
    world.run_intake(upload)  # intake takes the record over and queues the job
    assert world.record(event).state is JobState.QUEUED
    stuck = world.upload("uploads/stuck2.png", image_bytes(), {"model": "animevideov3"})
    assert world.lifecycle.accept(job_id=world.job_id(stuck), dedupe="d2", input_bucket=stuck.bucket,
                                  input_key=stuck.key)
    for _ in range(MAX_INTAKE_REDRIVES + 1):
        later(world, world.lifecycle.policy.stale_accepted_seconds + 1)
        sweeper.run()
    assert world.record(stuck).state is JobState.FAILED
    assert world.notifications()[-1]["payload"]["error"]["code"] == "INTERNAL_ERROR"


def test_a_queued_item_never_sent_is_sent(world: PipelineWorld, sweeper: Sweeper) -> None:
    """Intake wrote QUEUED, then died before its send (and its own retries ran out)."""
    item = WorkItem(job_id="unsent", input_bucket="in", input_key="uploads/u.png", output_bucket="out",
                    output_key="outputs/u.png",
                    options=JobOptions(model="animevideov3", scale=2.0, output_format=OutputFormat.PNG))
    assert world.lifecycle.accept(job_id="unsent", dedupe="d", input_bucket="in", input_key="uploads/u.png")

    def crash(_item: WorkItem) -> None:
        raise ConnectionError("intake's container was killed here")

    with pytest.raises(ConnectionError):
        world.lifecycle.enqueue(item, crash)
    later(world, UNSENT_GRACE_SECONDS + 1)
    assert sweeper.run().actions["item_sent"] == 1
    copy = world.queue.receive(wait_seconds=0, visibility_seconds=30)
    assert copy is not None and WorkItem.from_json(copy.body) == item
    assert world.raw_store.get("unsent").attributes["work_item_sent"] is True


def test_a_job_that_waits_past_its_deadline_for_a_gpu_fails_timed_out_once(
        world: PipelineWorld, sweeper: Sweeper) -> None:
    item = queued(world)
    later(world, 600)
    assert sweeper.run().looked == 0  # still waiting: nothing to do before the deadline
    later(world, world.lifecycle.policy.job_deadline_seconds)
    assert sweeper.run().actions["timed_out"] == 1
    (note,) = world.notifications()
    assert note["payload"]["error"]["code"] == "TIMED_OUT" and note["payload"]["error"]["retryable"] is True
    assert world.raw_store.get(item.job_id).state is JobState.FAILED
    assert sweeper.run().looked == 0  # closed: out of the index


def test_a_stranded_running_job_gets_its_item_back_and_one_whose_attempts_are_spent_fails(
        world: PipelineWorld, sweeper: Sweeper) -> None:
    item = queued(world)
    world.queue.receive(wait_seconds=0, visibility_seconds=600)
    claim = world.lifecycle.claim(item.job_id).claim
    assert claim is not None and world.lifecycle.start_inference(claim)
    world.sqs.purge_queue(QueueUrl=world.queue.url)  # its message is gone (a DLQ deleted it, or expiry)
    later(world, 3 * world.lifecycle.policy.lease_seconds + 1)
    assert sweeper.run().actions["redriven"] == 1
    copy = world.queue.receive(wait_seconds=0, visibility_seconds=30)
    assert copy is not None and WorkItem.from_json(copy.body).job_id == item.job_id
    for _ in range(world.settings.max_attempts - 1):
        again = world.lifecycle.claim(item.job_id).claim
        assert again is not None and world.lifecycle.start_inference(again)
        later(world, 3 * world.lifecycle.policy.lease_seconds + 1)
    assert sweeper.run().actions["crashed_out"] == 1
    (note,) = world.notifications()
    assert note["payload"]["error"]["code"] == "WORKER_CRASHED"


def test_a_live_job_is_left_alone(world: PipelineWorld, sweeper: Sweeper) -> None:
    item = queued(world)
    claim = world.lifecycle.claim(item.job_id).claim
    assert claim is not None
    for _ in range(5):  # its worker renews; the sweeper never interferes
        later(world, world.lifecycle.policy.lease_seconds / 2)
        assert world.lifecycle.renew(claim)
        sweeper.run()
    assert world.raw_store.get(item.job_id).state is JobState.RUNNING and world.notifications() == []


def test_an_unsent_terminal_notification_is_sent(world: PipelineWorld, sweeper: Sweeper, monkeypatch) -> None:
    from botocore.exceptions import ClientError

    item = queued(world)
    claim = world.lifecycle.claim(item.job_id).claim
    assert claim is not None
    notifier = world.lifecycle._notifier
    real = notifier.publish_text
    monkeypatch.setattr(notifier, "publish_text",
                        lambda text: (_ for _ in ()).throw(ClientError({"Error": {"Code": "Throttling"}}, "P")))
    note = Notification(event_type=EventType.FAILED, job_id=item.job_id, input=ImageInfo("in", item.input_key),
                        error=ErrorInfo(code="INTERNAL_ERROR", message="test"))
    assert world.lifecycle.finish(note, JobState.FAILED, holder=Holder.CLAIM, claim=claim).sent is False
    monkeypatch.setattr(notifier, "publish_text", real)
    later(world, OUTBOX_LEASE_SECONDS + 2)
    assert sweeper.run().actions["notification_sent"] == 1
    assert len(world.notifications()) == 1 and sweeper.run().looked == 0


def test_intake_dlq_messages_go_back_a_few_times_then_stay_parked(world: PipelineWorld, sweeper: Sweeper) -> None:
    body = json.dumps({"Records": []})
    world.sqs.send_message(QueueUrl=sweeper._intake_dlq_url, MessageBody=body)
    for tries in range(1, MAX_INTAKE_REDRIVES + 1):
        assert sweeper.redrive_intake_dlq() == 1
        (message,) = world.sqs.receive_message(QueueUrl=sweeper._intake_url, MessageAttributeNames=["All"])["Messages"]
        assert message["MessageAttributes"]["upscaler_redrives"]["StringValue"] == str(tries)
        world.sqs.send_message(QueueUrl=sweeper._intake_dlq_url, MessageBody=body,  # it failed intake again
                               MessageAttributes=message["MessageAttributes"])
        world.sqs.delete_message(QueueUrl=sweeper._intake_url, ReceiptHandle=message["ReceiptHandle"])
    assert sweeper.redrive_intake_dlq() == 0  # parked: the DLQ alarm and a human take it from here


def test_the_lambda_sweeps_and_reports_what_it_did(world: PipelineWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.sweeper import handler

    intake_url, _ = create_queue(world.sqs, "intake-for-lambda")
    dlq_url, _ = create_queue(world.sqs, "intake-dlq-for-lambda")
    item = queued(world)
    world.raw_store.update(item.job_id, {"sweep_at": 1})  # long overdue (the Lambda runs on the real clock)
    world.raw_store.update(item.job_id, {"deadline_at": 2})
    settings = world.settings.replace(intake_queue_url=intake_url, intake_dlq_url=dlq_url)
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    handler.get_sweeper.cache_clear()

    class Context:
        function_name, memory_limit_in_mb, aws_request_id = "sweeper", 256, "req-1"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:sweeper"

    try:
        summary = handler.lambda_handler({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}},
                                         Context())
    finally:
        handler.get_sweeper.cache_clear()
    assert summary == {"looked": 1, "actions": {"timed_out": 1, "intake_dlq_redriven": 0}}
    assert world.raw_store.get(item.job_id).state is JobState.FAILED
