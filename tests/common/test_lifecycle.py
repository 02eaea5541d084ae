"""common.lifecycle on moto: one claim holder at a time, stale attempts cannot finish, crashes counted on the record
(not by SQS receives), one publisher per outbox lease, and every upload ends in exactly one terminal state with
at least one notification, all copies identical, even when any single AWS call of the whole flow fails."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError
from fake_engine import image_bytes
from moto import mock_aws
from pipeline_world import PipelineWorld, WorkerKilled, make_pipeline_world

from common import aws
from common.contract import ErrorInfo, EventType, ImageInfo, JobOptions, JobState, Notification, OutputFormat, WorkItem
from common.lifecycle import (
    CRASHES,
    FAILURES,
    LOST,
    OUTBOX_LEASE_SECONDS,
    RELEASES,
    SWEEP_AT,
    SWEEP_SHARD,
    ClaimOutcome,
    Holder,
    JobLifecycle,
    NotificationPending,
    due_for_sweep,
)
from common.notify import Notifier
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
    assert world.lifecycle.accept(job_id=job_id, dedupe=f"d-{job_id}", input_bucket="in",
                                  input_key=f"uploads/{job_id}.png")
    item = WorkItem(job_id=job_id, input_bucket="in", input_key=f"uploads/{job_id}.png", output_bucket="out",
                    output_key=f"outputs/{job_id}.png",
                    options=JobOptions(model="animevideov3", scale=2.0, output_format=OutputFormat.PNG))
    assert world.lifecycle.enqueue(item, lambda _item: None)
    return item


def failed(job_id: str) -> Notification:
    return Notification(event_type=EventType.FAILED, job_id=job_id, input=ImageInfo("in", f"uploads/{job_id}.png"),
                        error=ErrorInfo(code="INTERNAL_ERROR", message="test"))


def lease(world: PipelineWorld) -> float:
    return world.lifecycle.policy.lease_seconds


def test_concurrent_claims_have_one_winner(world: PipelineWorld) -> None:
    queued_job(world)
    results: list[Any] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        results.append(world.lifecycle.claim("job-1"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = sorted(str(r.outcome) for r in results)
    assert outcomes.count(str(ClaimOutcome.CLAIMED)) == 1, outcomes
    assert outcomes.count(str(ClaimOutcome.HELD)) == 7


def test_a_running_job_is_taken_over_only_after_its_lease_and_a_crash_is_counted_only_after_inference(
        world: PipelineWorld) -> None:
    queued_job(world)
    first = world.lifecycle.claim("job-1")
    assert first.outcome is ClaimOutcome.CLAIMED and first.claim is not None
    second = world.lifecycle.claim("job-1")
    assert second.outcome is ClaimOutcome.HELD
    assert lease(world) - 1 <= second.seconds_held(world.clock.wall()) <= lease(world)
    world.clock.advance(lease(world) + 1)  # its worker died waiting for the GPU (a prefetched item)
    third = world.lifecycle.claim("job-1")
    assert third.outcome is ClaimOutcome.CLAIMED and third.claim is not None and third.claim.attempt == 2
    assert world.lifecycle.start_inference(third.claim)
    world.clock.advance(lease(world) + 1)  # this one died in inference: a crash
    fourth = world.lifecycle.claim("job-1")
    assert fourth.claim is not None and fourth.claim.failed_before == 1
    record = world.store.get("job-1")
    assert (record.number(LOST), record.number(CRASHES)) == (1, 1)


def test_a_stale_attempt_cannot_renew_release_or_finish(world: PipelineWorld) -> None:
    queued_job(world)
    stale = world.lifecycle.claim("job-1").claim
    world.clock.advance(lease(world) + 1)
    current = world.lifecycle.claim("job-1").claim
    assert stale is not None and current is not None
    assert not world.lifecycle.renew(stale)
    assert not world.lifecycle.release(stale)
    assert not world.lifecycle.start_inference(stale)
    assert world.lifecycle.finish(failed("job-1"), JobState.FAILED, holder=Holder.CLAIM, claim=stale).won is False
    assert world.store.get("job-1").state is JobState.RUNNING
    finish = world.lifecycle.finish(failed("job-1"), JobState.FAILED, holder=Holder.CLAIM, claim=current)
    assert (finish.won, finish.sent) == (True, True)
    assert [n["payload"]["job_id"] for n in world.notifications()] == ["job-1"]


def test_abandoned_failure_never_takes_a_live_or_accepted_job(world: PipelineWorld) -> None:
    """A DLQ message or the sweeper must not fail a job a live worker is finishing, nor one intake still owns."""
    assert world.lifecycle.accept(job_id="accepted", dedupe="d", input_bucket="in", input_key="uploads/a.png")
    assert not world.lifecycle.finish(failed("accepted"), JobState.FAILED, holder=Holder.ABANDONED).won
    queued_job(world)
    assert world.lifecycle.claim("job-1").outcome is ClaimOutcome.CLAIMED
    observed = world.store.get("job-1")
    assert not world.lifecycle.finish(failed("job-1"), JobState.FAILED, holder=Holder.ABANDONED,
                                      observed=observed).won
    world.clock.advance(lease(world) + 1)
    assert world.lifecycle.claim("job-1").outcome is ClaimOutcome.CLAIMED  # a new attempt, after `observed` died
    world.clock.advance(lease(world) + 1)
    assert not world.lifecycle.finish(failed("job-1"), JobState.FAILED, holder=Holder.ABANDONED,
                                      observed=observed).won  # not the attempt it observed
    assert world.lifecycle.finish(failed("job-1"), JobState.FAILED, holder=Holder.ABANDONED,
                                  observed=world.store.get("job-1")).won
    assert world.notifications() and world.store.get("accepted").state is JobState.ACCEPTED


def test_give_backs_cost_nothing_and_transient_failures_count(world: PipelineWorld) -> None:
    """Finding 3: a give-back (SIGTERM, spot) must never burn the crash budget, however often it happens."""
    queued_job(world)
    for _ in range(world.settings.max_attempts * 3):
        claim = world.lifecycle.claim("job-1").claim
        assert claim is not None and world.lifecycle.release(claim)
    claim = world.lifecycle.claim("job-1").claim
    assert claim is not None and claim.failed_before == 0
    assert world.lifecycle.release(claim, failed=True)
    claim = world.lifecycle.claim("job-1").claim
    assert claim is not None and claim.failed_before == 1
    record = world.store.get("job-1")
    assert (record.number(RELEASES), record.number(FAILURES), record.state) == (9, 1, JobState.RUNNING)


def test_enqueue_happens_once_and_an_unsent_item_is_sent_again(world: PipelineWorld) -> None:
    item = queued_job(world)
    assert not world.lifecycle.enqueue(item, lambda _item: None)  # no longer ACCEPTED
    world.store.update("job-1", {"work_item_sent": False})
    sent: list[WorkItem] = []
    assert world.lifecycle.resend_unsent(world.store.get("job-1"), sent.append)
    assert sent == [item]
    assert not world.lifecycle.resend_unsent(world.store.get("job-1"), sent.append)


def test_open_records_are_in_the_sweep_index_until_their_notification_is_sent(world: PipelineWorld) -> None:
    queued_job(world)
    record = world.store.get("job-1")
    assert record.attributes[SWEEP_SHARD].startswith("open#") and record.number(SWEEP_AT) > world.clock.wall()
    assert due_for_sweep(world.store, record.number(SWEEP_AT) + 1) == ["job-1"]
    assert due_for_sweep(world.store, record.number(SWEEP_AT) - 1) == []
    claim = world.lifecycle.claim("job-1").claim
    assert claim is not None
    world.lifecycle.finish(failed("job-1"), JobState.FAILED, holder=Holder.CLAIM, claim=claim)
    closed = world.store.get("job-1")
    assert SWEEP_SHARD not in closed.attributes and SWEEP_AT not in closed.attributes
    assert due_for_sweep(world.store, world.clock.wall() + 10**9) == []


def test_a_clean_run_makes_one_notification(world: PipelineWorld) -> None:
    event = world.upload("uploads/clean.png", image_bytes(), {"model": "animevideov3", "scale": "2"})
    world.settle(event)
    (note,) = world.notifications()
    assert note["payload"]["event_type"] == "upscale.succeeded"
    assert note["MessageAttributes"]["event_id"]["Value"] == note["payload"]["event_id"]
    assert world.starts == [0]


def test_a_duplicate_work_item_is_dropped_without_a_second_notification(world: PipelineWorld) -> None:
    """A second copy of the item (a give-back's copy, a re-drive, SQS's at-least-once delivery) never runs the
    job twice nor notifies twice."""
    event = world.upload("uploads/dup.png", image_bytes(), {"model": "animevideov3"})
    world.run_intake(event)
    record = world.record(event)
    world.queue.send(WorkItem.from_json(str(record.attributes["work_item"])))  # the duplicate
    while world.work_once() is not None:
        pass
    assert len(world.engine.calls) == 1
    assert [n["payload"]["event_type"] for n in world.notifications()] == ["upscale.succeeded"]


class _LostResponse:
    """SNS accepts the Publish, then the response is lost (a read timeout): the caller cannot know it went out."""

    def __init__(self, sns: Any, times: int) -> None:
        self._sns, self._times = sns, times

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sns, name)

    def publish(self, **kwargs: Any) -> Any:
        result = self._sns.publish(**kwargs)
        if self._times > 0:
            self._times -= 1
            raise ReadTimeoutError(endpoint_url="https://sns.us-east-1.amazonaws.com")
        return result


def test_an_ambiguous_publish_makes_identical_copies_with_one_event_id(world: PipelineWorld) -> None:
    """Finding 1: the retry after a lost Publish response sent a second, different copy (occurred_at regenerated).
    Standard SNS topics have no idempotency, so copies may repeat: they must be byte-identical, one event id."""
    world.lifecycle._notifier._sns = _LostResponse(world.lifecycle._notifier._sns, times=1)
    queued_job(world)
    claim = world.lifecycle.claim("job-1").claim
    assert claim is not None
    finish = world.lifecycle.finish(failed("job-1"), JobState.FAILED, holder=Holder.CLAIM, claim=claim)
    assert (finish.won, finish.sent) == (True, True)
    copies = world.notifications()
    assert len(copies) == 2
    assert copies[0]["Message"] == copies[1]["Message"]
    assert {c["MessageAttributes"]["event_id"]["Value"] for c in copies} == {copies[0]["payload"]["event_id"]}
    assert world.store.get("job-1").attributes["notification"] == copies[0]["Message"]


def test_one_publisher_per_outbox_lease_and_a_retry_is_fenced_by_it(world: PipelineWorld) -> None:
    """Finding 2: the old 30 s lease was shorter than one publish, and the winner never checked it again."""
    queued_job(world)
    claim = world.lifecycle.claim("job-1").claim
    assert claim is not None
    other = JobLifecycle(store=world.store, notifier=Notifier(sns_client=world.raw_sns,
                                                              topic_arn=world.settings.topic_arn, upload_prefix="u/"),
                         policy=world.lifecycle.policy, clock=world.clock.wall, sleep=lambda _s: None)
    took_over: list[bool] = []

    class SlowPublish:
        def publish(self, **_kwargs: Any) -> Any:
            with pytest.raises(NotificationPending, match="elsewhere"):  # while the lease lives: hands off
                other.resume(world.store.get("job-1"))
            world.clock.advance(OUTBOX_LEASE_SECONDS + 1)  # this publish outlives its lease...
            took_over.append(other.resume(world.store.get("job-1")))  # ...a redelivery takes over and sends
            raise ReadTimeoutError(endpoint_url="https://sns.us-east-1.amazonaws.com")  # this one never went out

    world.lifecycle._notifier._sns = SlowPublish()
    finish = world.lifecycle.finish(failed("job-1"), JobState.FAILED, holder=Holder.CLAIM, claim=claim)
    assert (finish.won, finish.sent) == (True, True)  # handed over: the new holder sent it
    assert took_over == [True]
    assert len(world.notifications()) == 1  # the first publisher's retry was fenced out by the lease
    assert world.store.get("job-1").attributes["notified"] is True


def test_one_publish_is_bounded_well_inside_the_outbox_lease() -> None:
    from common.aws import PUBLISH_CONFIG

    retries = PUBLISH_CONFIG.retries or {}  # botocore adds the total (first try included) once a client is built
    tries = int(retries.get("total_max_attempts") or retries["max_attempts"] + 1)
    worst = tries * (PUBLISH_CONFIG.connect_timeout + PUBLISH_CONFIG.read_timeout) + 2 * tries
    assert worst * 2 <= OUTBOX_LEASE_SECONDS  # room for clock skew between publishers


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
def test_every_single_aws_failure_still_ends_in_one_terminal_state_and_identical_notifications(
        aws_creds: None, kind: str) -> None:
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
            assert notes and {n["payload"]["job_id"] for n in notes} == {world.job_id(event)}, (fail_at, failed_call)
            assert len({n["Message"] for n in notes}) == 1, (fail_at, failed_call)  # copies are identical
            expected = {"succeeded": "upscale.succeeded", "rejected": "upscale.rejected"}[kind]
            assert notes[0]["payload"]["event_type"] == expected, (fail_at, failed_call, notes[0]["payload"])


def test_an_item_that_kills_its_worker_in_inference_fails_once_after_max_attempts(world: PipelineWorld) -> None:
    """Counted on the record: exactly max_attempts real attempts, whatever SQS's receive count says."""
    def die() -> None:
        raise WorkerKilled()

    world.engine.during_upscale = die
    event = world.upload("uploads/killer.png", image_bytes(), {"model": "animevideov3"})
    world.run_intake(event)
    while world.work_once() is not None:
        pass
    assert len(world.engine.calls) == world.settings.max_attempts
    (note,) = world.notifications()
    assert (note["payload"]["event_type"], note["payload"]["error"]["code"]) == ("upscale.failed", "WORKER_CRASHED")
    assert world.record(event).number(CRASHES) == world.settings.max_attempts
    assert world.record(event).state is JobState.FAILED


def test_transient_errors_release_and_the_last_attempt_fails_cleanly(world: PipelineWorld) -> None:
    from gpu_batch.engine import EngineOutOfMemoryError

    world.engine.fail_with = EngineOutOfMemoryError("out of GPU memory")
    event = world.upload("uploads/huge.png", image_bytes(), {"model": "animevideov3"})
    world.run_intake(event)
    dispositions = []
    while (d := world.work_once()) is not None:
        dispositions.append(d)
    assert dispositions == [Disposition.RELEASED] * (world.settings.max_attempts - 1) + [Disposition.DONE]
    (note,) = world.notifications()
    assert note["payload"]["error"]["code"] == "OUT_OF_MEMORY"


def test_an_image_encoded_beside_a_killer_counts_half_a_crash(world: PipelineWorld) -> None:
    """Found by the chaos run: a healthy image in its worker's encode stage died with a poison image's worker,
    three times, and ended WORKER_CRASHED. Outside inference a death counts half."""
    queued_job(world)
    for _ in range(world.settings.max_attempts):
        claim = world.lifecycle.claim("job-1").claim
        assert claim is not None and world.lifecycle.start_inference(claim)
        assert world.lifecycle.end_inference(claim)  # inferred; the worker dies while this image is encoded
        world.clock.advance(lease(world) + 1)
    result = world.lifecycle.claim("job-1")
    assert result.outcome is ClaimOutcome.CLAIMED  # 3 halves: still under the budget
    record = world.store.get("job-1")
    assert (record.number(CRASHES), record.number(LOST)) == (0, 3)
