"""The notifier settles the work DLQ: one upscale.failed for an item whose attempts kept dying, a fresh copy back
on the work queue for a healthy item that only ran out of receives, and never a deleted message it did not settle."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from boto3.dynamodb.conditions import Attr
from fake_engine import image_bytes
from moto import mock_aws
from pipeline_world import PipelineWorld, make_pipeline_world

from common.contract import JobState, WorkItem, validate_notification
from common.lifecycle import OUTBOX_LEASE_SECONDS, NotificationPending
from functions.notifier import handler
from functions.notifier.dead_items import ItemNotSettled, settle_dead_item


@pytest.fixture
def world(aws_creds: None) -> Iterator[PipelineWorld]:
    with mock_aws():
        yield make_pipeline_world()


def queued_item(world: PipelineWorld, name: str = "dead.png") -> WorkItem:
    event = world.upload(f"uploads/{name}", image_bytes(), {"model": "animevideov3"})
    world.run_intake(event)
    return WorkItem.from_json(str(world.record(event).attributes["work_item"]))


def settle(world: PipelineWorld, body: str) -> str:
    return settle_dead_item(body, lifecycle=world.lifecycle, send=world.queue.send, now=world.clock.now()).action


def crash(world: PipelineWorld, item: WorkItem) -> None:
    """One attempt claims the job, starts inference and dies with it."""
    claim = world.lifecycle.claim(item.job_id).claim
    assert claim is not None and world.lifecycle.start_inference(claim)
    world.clock.advance(world.lifecycle.policy.lease_seconds + 1)


def test_an_item_whose_attempts_kept_dying_fails_its_job_once(world: PipelineWorld) -> None:
    item = queued_item(world)
    for _ in range(world.settings.max_attempts):
        crash(world, item)
    assert settle(world, item.to_json()) == "marked_failed"
    (note,) = world.notifications()
    validate_notification(note["payload"])
    assert note["payload"]["error"]["code"] == "WORKER_CRASHED"
    assert f"{world.settings.max_attempts} time(s)" in note["payload"]["error"]["message"]
    assert settle(world, item.to_json()) == "already_terminal" and world.notifications() == []


def test_a_healthy_item_that_ran_out_of_receives_goes_back_to_the_work_queue(world: PipelineWorld) -> None:
    """Finding 3: receives (give-backs, held duplicates) are not failures; only the record's count is."""
    item = queued_item(world)
    world.queue.receive(wait_seconds=0, visibility_seconds=30)  # the original copy, now "in the DLQ"
    crash(world, item)  # one real death: under the budget
    assert settle(world, item.to_json()) == "redriven"
    copy = world.queue.receive(wait_seconds=0, visibility_seconds=30)
    assert copy is not None and WorkItem.from_json(copy.body).job_id == item.job_id
    assert world.raw_store.get(item.job_id).number("redrives") == 1 and world.notifications() == []


def test_a_dead_item_a_live_worker_holds_is_kept_not_deleted(world: PipelineWorld) -> None:
    """Finding 7: the notifier deleted a DLQ message whose job it could not settle (held), stranding the job."""
    item = queued_item(world)
    assert world.lifecycle.claim(item.job_id).claim is not None
    with pytest.raises(ItemNotSettled, match="live worker"):
        settle(world, item.to_json())
    assert world.raw_store.get(item.job_id).state is JobState.RUNNING and world.notifications() == []
    world.clock.advance(world.lifecycle.policy.lease_seconds + 1)  # that worker dies before inference
    assert settle(world, item.to_json()) == "redriven"  # the job is not stranded: its item is back


def test_a_job_intake_still_owns_is_kept_for_later(world: PipelineWorld) -> None:
    """Failing an ACCEPTED job would make intake's redelivery drop the upload without a word."""
    item = queued_item(world)
    world.raw_store.update(item.job_id, {"state": "ACCEPTED"})
    with pytest.raises(ItemNotSettled, match="intake owns it"):
        settle(world, item.to_json())
    assert world.raw_store.get(item.job_id).state is JobState.ACCEPTED


def test_a_terminal_job_with_an_unsent_notification_gets_it_sent(world: PipelineWorld, monkeypatch) -> None:
    from botocore.exceptions import ClientError

    item = queued_item(world)
    for _ in range(world.settings.max_attempts):
        crash(world, item)
    notifier = world.lifecycle._notifier
    real = notifier.publish_text
    monkeypatch.setattr(notifier, "publish_text",
                        lambda payload: (_ for _ in ()).throw(ClientError({"Error": {"Code": "Throttling"}}, "P")))
    with pytest.raises(NotificationPending):
        settle(world, item.to_json())
    monkeypatch.setattr(notifier, "publish_text", real)
    with pytest.raises(NotificationPending):  # the first publisher's outbox lease still runs: not twice
        settle(world, item.to_json())
    world.clock.advance(OUTBOX_LEASE_SECONDS + 1)
    assert settle(world, item.to_json()) == "delivered_stored"
    assert len(world.notifications()) == 1


@pytest.mark.parametrize("body", ["not json", "{}", json.dumps({"version": 1, "job_id": "x"})])
def test_messages_that_are_not_work_items_are_ignored(world: PipelineWorld, body: str) -> None:
    assert settle(world, body) == "ignored"


def test_unknown_job_is_reported_not_created(world: PipelineWorld) -> None:
    item = queued_item(world)
    world.raw_store.delete(item.job_id, Attr("job_id").exists())
    assert settle(world, item.to_json()) == "unknown_job"


def test_lambda_handler_reports_partial_batch_failures(world: PipelineWorld, monkeypatch, lambda_context) -> None:
    settled, held = queued_item(world, "a.png"), queued_item(world, "b.png")
    assert world.lifecycle.claim(held.job_id).claim is not None  # a live worker holds the second
    for name, value in world.settings.to_env().items():
        monkeypatch.setenv(name, value)
    handler.get_parts.cache_clear()

    def record(message_id: str, item: WorkItem) -> dict[str, object]:
        return {"messageId": message_id, "receiptHandle": "r", "body": item.to_json(),
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:work-dlq",
                "awsRegion": "us-east-1"}

    event = {"Records": [record("m1", settled), record("m2", held)]}
    try:
        assert handler.lambda_handler(event, lambda_context) == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    finally:
        handler.get_parts.cache_clear()
    assert world.raw_store.get(settled.job_id).number("redrives") == 1
