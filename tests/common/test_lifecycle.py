"""common.lifecycle on moto: one claim holder at a time, stale attempts cannot finish, and every upload ends
in exactly one terminal notification even when any single AWS call of the whole flow fails."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fake_engine import image_bytes
from moto import mock_aws
from pipeline_world import PipelineWorld, make_pipeline_world

from common import aws
from common.contract import ErrorInfo, EventType, ImageInfo, JobOptions, JobState, Notification, OutputFormat, WorkItem
from common.lifecycle import ClaimOutcome, Holder
from gpu_batch.worker.item import Disposition


@pytest.fixture
def aws_env(aws_creds: None) -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def world(aws_env: None) -> PipelineWorld:
    return make_pipeline_world()


def queued_job(world: PipelineWorld, job_id: str = "job-1") -> WorkItem:
    """A job as intake leaves it: ACCEPTED, then QUEUED with its item sent."""
    world.store.create(job_id=job_id, dedupe=f"d-{job_id}", input_bucket="in", input_key=f"uploads/{job_id}.png")
    item = WorkItem(job_id=job_id, input_bucket="in", input_key=f"uploads/{job_id}.png", output_bucket="out",
                    output_key=f"outputs/{job_id}.png",
                    options=JobOptions(model="animevideov3", scale=2.0, output_format=OutputFormat.PNG))
    assert world.lifecycle.enqueue(item, lambda _item: None)
    return item


def failed(job_id: str) -> Notification:
    return Notification(event_type=EventType.FAILED, job_id=job_id, input=ImageInfo("in", f"uploads/{job_id}.png"),
                        error=ErrorInfo(code="INTERNAL_ERROR", message="test"))


def test_concurrent_claims_have_one_winner(world: PipelineWorld) -> None:
    queued_job(world)
    results: list[Any] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        results.append(world.lifecycle.claim("job-1", lease_seconds=60))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = sorted(str(r.outcome) for r in results)
    assert outcomes.count(str(ClaimOutcome.CLAIMED)) == 1, outcomes
    assert outcomes.count(str(ClaimOutcome.HELD)) == 7


def test_a_running_job_is_not_claimed_again_while_its_lease_lives(world: PipelineWorld) -> None:
    """The old RUNNING -> RUNNING hole: a second delivery must not hold the job beside a live worker."""
    queued_job(world)
    first = world.lifecycle.claim("job-1", lease_seconds=60)
    assert first.outcome is ClaimOutcome.CLAIMED
    second = world.lifecycle.claim("job-1", lease_seconds=60)
    assert second.outcome is ClaimOutcome.HELD
    assert 59 <= second.seconds_held(world.clock.wall()) <= 60
    world.clock.advance(61)  # its worker died: the lease ran out
    third = world.lifecycle.claim("job-1", lease_seconds=60)
    assert third.outcome is ClaimOutcome.CLAIMED and third.claim is not None
    assert third.claim.attempt == 2


def test_a_stale_attempt_cannot_renew_release_or_finish(world: PipelineWorld) -> None:
    queued_job(world)
    stale = world.lifecycle.claim("job-1", lease_seconds=10).claim
    world.clock.advance(11)
    current = world.lifecycle.claim("job-1", lease_seconds=10).claim
    assert stale is not None and current is not None
    assert not world.lifecycle.renew(stale, 10)
    assert not world.lifecycle.release(stale)
    assert world.lifecycle.finish(failed("job-1"), JobState.FAILED, holder=Holder.CLAIM, claim=stale) \
        .won is False
    assert world.store.get("job-1").state is JobState.RUNNING
    finish = world.lifecycle.finish(failed("job-1"), JobState.FAILED, holder=Holder.CLAIM, claim=current)
    assert (finish.won, finish.sent) == (True, True)
    assert [n["payload"]["job_id"] for n in world.notifications()] == ["job-1"]


def test_abandoned_failure_never_takes_a_live_or_accepted_job(world: PipelineWorld) -> None:
    """A DLQ message must not fail a job a live worker is finishing, nor one intake still owns."""
    world.store.create(job_id="accepted", dedupe="d", input_bucket="in", input_key="uploads/a.png")
    assert not world.lifecycle.finish(failed("accepted"), JobState.FAILED, holder=Holder.ABANDONED).won
    queued_job(world)
    assert world.lifecycle.claim("job-1", lease_seconds=60).outcome is ClaimOutcome.CLAIMED
    assert not world.lifecycle.finish(failed("job-1"), JobState.FAILED, holder=Holder.ABANDONED).won
    world.clock.advance(61)
    assert world.lifecycle.finish(failed("job-1"), JobState.FAILED, holder=Holder.ABANDONED).won
    assert world.notifications() and world.store.get("accepted").state is JobState.ACCEPTED


def test_release_puts_the_job_back_for_the_next_delivery(world: PipelineWorld) -> None:
    queued_job(world)
    claim = world.lifecycle.claim("job-1", lease_seconds=60).claim
    assert claim is not None and world.lifecycle.release(claim)
    assert world.store.get("job-1").state is JobState.QUEUED
    assert world.lifecycle.claim("job-1", lease_seconds=60).outcome is ClaimOutcome.CLAIMED


def test_enqueue_happens_once_and_an_unsent_item_is_sent_again(world: PipelineWorld) -> None:
    item = queued_job(world)
    assert not world.lifecycle.enqueue(item, lambda _item: None)  # no longer ACCEPTED
    world.store.update("job-1", {"work_item_sent": False})
    sent: list[WorkItem] = []
    assert world.lifecycle.resend_unsent(world.store.get("job-1"), sent.append)
    assert sent == [item]
    assert not world.lifecycle.resend_unsent(world.store.get("job-1"), sent.append)


def test_a_clean_run_makes_one_notification(world: PipelineWorld) -> None:
    event = world.upload("uploads/clean.png", image_bytes(), {"model": "animevideov3", "scale": "2"})
    world.settle(event)
    (note,) = world.notifications()
    assert note["payload"]["event_type"] == "upscale.succeeded"
    assert world.starts == [0]


def test_a_duplicate_work_item_is_dropped_without_a_second_notification(world: PipelineWorld) -> None:
    """The old 'submit succeeded, SUBMITTED write failed -> second submission' hole: a second copy of the
    item (a resend, or SQS's at-least-once delivery) never runs the job twice nor notifies twice."""
    event = world.upload("uploads/dup.png", image_bytes(), {"model": "animevideov3"})
    world.run_intake(event)
    record = world.record(event)
    world.queue.send(WorkItem.from_json(str(record.attributes["work_item"])))  # the duplicate
    while world.work_once() is not None:
        pass
    assert len(world.engine.calls) == 1
    assert [n["payload"]["event_type"] for n in world.notifications()] == ["upscale.succeeded"]


def _flow_calls(event_kind: str) -> int:
    """How many AWS calls the whole flow of one upload makes when nothing fails."""
    aws.clear_cache()
    with mock_aws():
        world = make_pipeline_world()
        world.settle(_upload(world, event_kind))
        return len(world.plan.calls)


def _upload(world: PipelineWorld, kind: str) -> Any:
    body = b"not an image at all" if kind == "rejected" else image_bytes()
    return world.upload(f"uploads/{kind}.png", body, {"model": "animevideov3"})


@pytest.mark.parametrize("kind", ["succeeded", "rejected"])
def test_every_single_aws_failure_still_ends_in_exactly_one_notification(aws_creds: None, kind: str) -> None:
    total = _flow_calls(kind)
    assert total >= 8  # HEAD, ranged GET, record writes, copy, delete, publish...
    for fail_at in range(total):
        aws.clear_cache()
        with mock_aws():
            world = make_pipeline_world(fail_at=fail_at)
            event = _upload(world, kind)
            world.settle(event)
            notes = world.notifications()
            failed_call = world.plan.calls[fail_at] if fail_at < len(world.plan.calls) else "none"
            assert [n["payload"]["job_id"] for n in notes] == [world.job_id(event)], (fail_at, failed_call)
            expected = {"succeeded": "upscale.succeeded", "rejected": "upscale.rejected"}[kind]
            assert notes[0]["payload"]["event_type"] == expected, (fail_at, failed_call, notes[0]["payload"])


def test_an_item_that_kills_its_worker_every_time_fails_once_after_max_attempts(world: PipelineWorld) -> None:
    event = world.upload("uploads/killer.png", image_bytes(), {"model": "animevideov3"})
    world.run_intake(event)
    deliveries = 0
    while (delivery := world.queue.receive(wait_seconds=0, visibility_seconds=30)) is not None:
        deliveries += 1
        # the worker claims it and dies (OOM kill): no release, no terminal write, the message stays
        assert world.lifecycle.claim(world.job_id(event), lease_seconds=29).outcome is ClaimOutcome.CLAIMED
        world.queue.hide(delivery, 0)
        world.clock.advance(31)
    assert deliveries == world.settings.max_attempts
    (outcome,) = world.drain_dead()
    assert outcome.action == "marked_failed"
    (note,) = world.notifications()
    assert (note["payload"]["event_type"], note["payload"]["error"]["code"]) == ("upscale.failed", "WORKER_CRASHED")
    assert world.drain_dead() == []


def test_transient_errors_release_and_the_last_attempt_fails_cleanly(world: PipelineWorld) -> None:
    from gpu_batch.engine import EngineOutOfMemoryError

    world.engine.fail_with = EngineOutOfMemoryError("out of GPU memory")
    event = world.upload("uploads/huge.png", image_bytes(), {"model": "animevideov3"})
    world.run_intake(event)
    dispositions = []
    while (d := world.work_once()) is not None:
        dispositions.append(d)
    assert dispositions == [Disposition.RETRY] * (world.settings.max_attempts - 1) + [Disposition.DONE]
    (note,) = world.notifications()
    assert note["payload"]["error"]["code"] == "OUT_OF_MEMORY"
