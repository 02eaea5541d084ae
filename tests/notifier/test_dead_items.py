"""The notifier drains the work DLQ: one upscale.failed for an item that kept killing its worker, nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from boto3.dynamodb.conditions import Attr
from fake_engine import image_bytes
from moto import mock_aws
from pipeline_world import PipelineWorld, make_pipeline_world

from common.contract import JobState, WorkItem, validate_notification
from common.lifecycle import NotificationPending
from functions.notifier import handler
from functions.notifier.dead_items import fail_dead_item


@pytest.fixture
def world(aws_creds: None) -> Iterator[PipelineWorld]:
    with mock_aws():
        yield make_pipeline_world()


def queued_item(world: PipelineWorld, name: str = "dead.png") -> WorkItem:
    event = world.upload(f"uploads/{name}", image_bytes(), {"model": "animevideov3"})
    world.run_intake(event)
    return WorkItem.from_json(str(world.record(event).attributes["work_item"]))


def test_an_abandoned_item_fails_its_job_once(world: PipelineWorld) -> None:
    item = queued_item(world)
    assert world.lifecycle.claim(item.job_id, lease_seconds=10).claim is not None
    world.clock.advance(11)  # its worker died with it
    outcome = fail_dead_item(item.to_json(), lifecycle=world.lifecycle, now=world.clock.now())
    assert outcome.action == "marked_failed"
    (note,) = world.notifications()
    validate_notification(note["payload"])
    assert note["payload"]["error"]["code"] == "WORKER_CRASHED"
    assert "1 time(s)" in note["payload"]["error"]["message"]
    again = fail_dead_item(item.to_json(), lifecycle=world.lifecycle, now=world.clock.now())
    assert again.action == "already_terminal" and world.notifications() == []


def test_a_duplicate_in_the_dlq_never_fails_a_job_a_live_worker_holds(world: PipelineWorld) -> None:
    item = queued_item(world)
    assert world.lifecycle.claim(item.job_id, lease_seconds=60).claim is not None
    assert fail_dead_item(item.to_json(), lifecycle=world.lifecycle).action == "held"
    assert world.raw_store.get(item.job_id).state is JobState.RUNNING and world.notifications() == []


def test_a_job_intake_still_owns_is_left_alone(world: PipelineWorld) -> None:
    """The old hole: failing an ACCEPTED job made intake's redelivery drop the upload without a word."""
    item = queued_item(world)
    world.raw_store.update(item.job_id, {"state": "ACCEPTED"})
    assert fail_dead_item(item.to_json(), lifecycle=world.lifecycle).action == "ignored"
    assert world.raw_store.get(item.job_id).state is JobState.ACCEPTED


def test_a_terminal_job_with_an_unsent_notification_gets_it_sent(world: PipelineWorld, monkeypatch) -> None:
    from botocore.exceptions import ClientError

    item = queued_item(world)
    world.clock.advance(1)
    notifier = world.lifecycle._notifier
    real = notifier.publish_payload
    monkeypatch.setattr(notifier, "publish_payload",
                        lambda payload: (_ for _ in ()).throw(ClientError({"Error": {"Code": "Throttling"}}, "P")))
    with pytest.raises(NotificationPending):
        fail_dead_item(item.to_json(), lifecycle=world.lifecycle)
    monkeypatch.setattr(notifier, "publish_payload", real)
    with pytest.raises(NotificationPending):  # the first publisher's outbox lease still runs: not twice
        fail_dead_item(item.to_json(), lifecycle=world.lifecycle)
    world.clock.advance(31)
    assert fail_dead_item(item.to_json(), lifecycle=world.lifecycle).action == "delivered_stored"
    assert len(world.notifications()) == 1


@pytest.mark.parametrize("body", ["not json", "{}", json.dumps({"version": 1, "job_id": "x"})])
def test_messages_that_are_not_work_items_are_ignored(world: PipelineWorld, body: str) -> None:
    assert fail_dead_item(body, lifecycle=world.lifecycle).action == "ignored"


def test_unknown_job_is_reported_not_created(world: PipelineWorld) -> None:
    item = queued_item(world)
    world.raw_store.delete(item.job_id, Attr("job_id").exists())
    assert fail_dead_item(item.to_json(), lifecycle=world.lifecycle).action == "unknown_job"


def test_lambda_handler_reports_partial_batch_failures(world: PipelineWorld, monkeypatch, lambda_context) -> None:
    item = queued_item(world)
    world.raw_store.update(item.job_id, {"state": "QUEUED"})
    for name, value in world.settings.to_env().items():
        monkeypatch.setenv(name, value)
    handler.get_lifecycle.cache_clear()
    event = {"Records": [
        {"messageId": "m1", "receiptHandle": "r1", "body": item.to_json(), "attributes": {
            "ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:work-dlq", "awsRegion": "us-east-1"}]}
    try:
        assert handler.lambda_handler(event, lambda_context) == {"batchItemFailures": []}
    finally:
        handler.get_lifecycle.cache_clear()
    assert world.raw_store.get(item.job_id).state is JobState.FAILED
    assert len(world.notifications()) == 1
