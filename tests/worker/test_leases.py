"""The lease keeper: every held item stays leased (visibility and claim) until its message is settled, and the
claim is renewed even when SQS refuses the visibility change (findings 5 and 6)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pipeline_world import PipelineWorld

from common.lifecycle import CLAIM_UNTIL
from gpu_batch.worker.item import Held, Timings, take
from gpu_batch.worker.leases import LeaseKeeper

FAST = {"model": "animevideov3", "scale": "2"}


def held_item(world: PipelineWorld, kit: Any, name: str) -> Held:
    world.run_intake(world.upload(f"uploads/{name}.png", kit.image(), FAST))
    delivery = world.queue.receive(wait_seconds=0, visibility_seconds=30)
    assert delivery is not None
    taken = take(world.worker, delivery)
    assert isinstance(taken, Held)
    return taken


class _RefusingQueue:
    """SQS refuses every ChangeMessageVisibility (throttled, or a stale receipt handle)."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    def hide_many(self, deliveries: Any, seconds: int) -> Any:
        raise ClientError({"Error": {"Code": "ThrottlingException"}}, "ChangeMessageVisibilityBatch")


def test_a_failed_visibility_change_never_skips_the_claim_renewal(world: PipelineWorld, kit: Any) -> None:
    held = held_item(world, kit, "renew")
    worker = world.worker
    worker.queue = _RefusingQueue(worker.queue)  # type: ignore[assignment]
    keeper = LeaseKeeper(worker)
    keeper.add(held)
    before = world.raw_store.get(held.job_id).number(CLAIM_UNTIL)
    world.clock.advance(20)
    keeper.renew_all()
    after = world.raw_store.get(held.job_id).number(CLAIM_UNTIL)
    assert after == before + 20 and not held.lost


class _SlowlyFailingQueue(_RefusingQueue):
    """SQS answers HTTP 500 until botocore's retries, with their backoff, are spent: the call takes a lease."""

    def __init__(self, queue: Any, world: PipelineWorld, job_id: str) -> None:
        super().__init__(queue)
        self.claim_until_when_called: float | None = None
        self._world, self._job_id = world, job_id

    def hide_many(self, deliveries: Any, seconds: int) -> Any:
        self.claim_until_when_called = self._world.raw_store.get(self._job_id).number(CLAIM_UNTIL)
        self._world.clock.advance(self._world.settings.work_visibility_seconds)
        raise ClientError({"Error": {"Code": "InternalError"}}, "ChangeMessageVisibilityBatch")


def test_the_claim_is_renewed_before_a_visibility_change_that_may_take_a_whole_lease(
        world: PipelineWorld, kit: Any) -> None:
    held = held_item(world, kit, "slow-sqs")
    before = world.raw_store.get(held.job_id).number(CLAIM_UNTIL)
    worker = world.worker
    queue = _SlowlyFailingQueue(worker.queue, world, held.job_id)
    worker.queue = queue  # type: ignore[assignment]
    keeper = LeaseKeeper(worker)
    keeper.add(held)
    world.clock.advance(20)
    keeper.renew_all()
    assert queue.claim_until_when_called == before + 20  # renewed before SQS was asked (and stalled)
    assert not held.lost


class _HangingQueue(_RefusingQueue):
    """ChangeMessageVisibility that does not answer (botocore would wait out its read timeout, several times)."""

    def __init__(self, queue: Any) -> None:
        super().__init__(queue)
        self.entered, self.release = threading.Event(), threading.Event()

    def hide_many(self, deliveries: Any, seconds: int) -> Any:
        self.entered.set()
        self.release.wait(60)
        return []


def test_a_visibility_call_that_hangs_never_holds_the_claims_back(
        world: PipelineWorld, kit: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    held = held_item(world, kit, "hung-sqs")
    worker = world.worker
    worker.settings = worker.settings.replace(work_visibility_seconds=1)  # a beat every third of a second
    queue = _HangingQueue(worker.queue)
    worker.queue = queue  # type: ignore[assignment]
    renewed_while_sqs_hangs = threading.Event()
    renew = worker.lifecycle.renew

    def watched_renew(claim: Any) -> bool:
        if queue.entered.is_set():
            renewed_while_sqs_hangs.set()
        return renew(claim)

    monkeypatch.setattr(worker.lifecycle, "renew", watched_renew)
    keeper = LeaseKeeper(worker)
    keeper.add(held)
    keeper.start()
    try:
        assert queue.entered.wait(30)
        assert renewed_while_sqs_hangs.wait(30)  # the claim keeps its own beat
        assert not held.lost
    finally:
        queue.release.set()
        keeper.stop()


def test_every_held_item_is_renewed_until_removed_and_a_hung_one_is_let_go(world: PipelineWorld, kit: Any) -> None:
    first, second = held_item(world, kit, "a"), held_item(world, kit, "b")
    keeper = LeaseKeeper(world.worker)
    keeper.add(first)
    keeper.add(second)
    world.clock.advance(20)
    keeper.renew_all()
    assert all(world.raw_store.get(h.job_id).number(CLAIM_UNTIL) > world.clock.wall() + 20 for h in (first, second))
    keeper.remove(first)  # settled (terminal write, publish and delete done): no longer renewed
    world.clock.advance(world.settings.max_item_seconds + 1)  # the second hangs past max_item_seconds
    keeper.renew_all()
    assert second.lost and keeper.count() == 1
    assert world.raw_store.get(second.job_id).number(CLAIM_UNTIL) < world.clock.wall()  # it may be taken over


def test_timings_report_the_engine_time_as_inference() -> None:
    durations = Timings(decode=0.5, inference=2.0, encode=1.0, download=0.1).durations()
    assert (durations.inference, durations.download) == (3.5, 0.1)
