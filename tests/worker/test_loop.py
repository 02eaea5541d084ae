"""The worker's loop: many items, one model load, a slot kept and freed, exits when idle or told to stop."""

from __future__ import annotations

import time

from pipeline_world import PipelineWorld

from common.contract import JobState
from common.scaling import WorkerSlots
from gpu_batch.worker.loop import SlotLease, run_worker
from gpu_batch.worker.runtime import SystemClock

FAST = {"model": "animevideov3", "scale": "2"}


def real_time_worker(world: PipelineWorld, **settings: object):
    """The world's worker with the system clock (the loop measures idleness and age in real time)."""
    worker = world.worker
    worker.clock = SystemClock()
    worker.lifecycle = type(world.lifecycle)(store=world.store, notifier=world.lifecycle._notifier,
                                             policy=world.lifecycle.policy)
    worker.settings = world.settings.replace(**settings)
    return worker


def test_one_worker_drains_many_items_loads_the_model_once_and_exits_when_idle(world: PipelineWorld, kit) -> None:
    events = [world.upload(f"uploads/many/{i}.png", kit.image(8 + i, 8), FAST) for i in range(5)]
    for event in events:
        world.run_intake(event)
    slots = WorkerSlots(world.store)
    token = slots.acquire(5, grace_seconds=60)  # intake's fake starter holds the first slots
    assert token is not None

    summary = run_worker(real_time_worker(world, worker_idle_seconds=1), slot=SlotLease(slots, 5, token))

    assert (summary.items, summary.done, summary.reason) == (5, 5, "idle")
    assert summary.models == {"animevideov3"} and world.engine.preloaded == ["animevideov3"]
    assert all(world.record(e).state is JobState.SUCCEEDED for e in events)
    assert len(world.notifications()) == 5
    slot = slots.all(6)[-1]
    assert slot.number == 5 and slot.status == "FREE" and slot.lease_until == 0  # freed on the way out


def test_a_stop_request_finishes_the_image_in_hand_and_gives_back_the_rest(world: PipelineWorld, kit) -> None:
    events = [world.upload(f"uploads/stop/{i}.png", kit.image(), FAST) for i in range(3)]
    for event in events:
        world.run_intake(event)
    worker = real_time_worker(world, worker_idle_seconds=30)
    world.engine.during_upscale = worker.stop.requested.set  # SIGTERM arrives while the first image is processed
    summary = run_worker(worker)
    assert summary.reason == "stop signal"
    states = sorted(str(world.record(e).state) for e in events)
    assert states == ["QUEUED", "QUEUED", "SUCCEEDED"]  # the image in hand finished, nothing else started
    assert len(world.notifications()) == 1 and len(world.engine.calls) == 1
    assert all(world.record(e).number("crashes") == 0 for e in events)


def test_the_next_image_is_claimed_and_decoded_while_the_gpu_runs_and_a_stop_gives_it_back(
        world: PipelineWorld, kit) -> None:
    """The pipeline: image N+1 held (claimed, decoded) during N's forward; SIGTERM gives it back at once."""
    events = [world.upload(f"uploads/pipe/{i}.png", kit.image(), FAST) for i in range(2)]
    for event in events:
        world.run_intake(event)
    worker = real_time_worker(world, worker_idle_seconds=30)
    seen: list[list[str]] = []

    def during_first_forward() -> None:
        def both_running() -> bool:
            return all(world.record(e).state is JobState.RUNNING for e in events)
        deadline = time.monotonic() + 60
        while not both_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.append(sorted(str(world.record(e).state) for e in events))
        world.engine.during_upscale = None
        worker.stop.requested.set()

    world.engine.during_upscale = during_first_forward
    summary = run_worker(worker)
    assert seen == [["RUNNING", "RUNNING"]]  # the second was claimed while the first was in the GPU
    assert sorted(str(world.record(e).state) for e in events) == ["QUEUED", "SUCCEEDED"]
    given_back = next(e for e in events if world.record(e).state is JobState.QUEUED)
    assert (world.record(given_back).number("releases"), world.record(given_back).number("crashes")) == (1, 0)
    assert summary.released == 1 and len(world.engine.calls) == 1


def test_a_stop_during_the_long_poll_gives_the_received_item_back_untouched(world: PipelineWorld, kit) -> None:
    event = world.upload("uploads/poll.png", kit.image(), FAST)
    world.run_intake(event)
    worker = real_time_worker(world, worker_idle_seconds=30)
    receive = worker.queue.receive

    def receive_then_sigterm(**kwargs):
        delivery = receive(**kwargs)
        worker.stop.requested.set()
        return delivery

    worker.queue.receive = receive_then_sigterm  # type: ignore[method-assign]
    summary = run_worker(worker)
    assert (summary.reason, summary.items, summary.released) == ("stop signal", 0, 1)
    assert world.engine.calls == [] and world.record(event).state is JobState.QUEUED
    assert world.queue.receive(wait_seconds=0, visibility_seconds=30) is not None  # visible again at once


def test_worker_max_seconds_stops_taking_items(world: PipelineWorld, kit) -> None:
    world.run_intake(world.upload("uploads/old.png", kit.image(), FAST))
    summary = run_worker(real_time_worker(world, worker_idle_seconds=30, worker_max_seconds=0))
    assert summary.reason == "worker_max_seconds reached" and summary.items == 0


def test_a_worker_whose_slot_was_given_to_another_stops(world: PipelineWorld, kit) -> None:
    slots = WorkerSlots(world.store)
    token = slots.acquire(0, grace_seconds=60)
    assert token is not None and slots.free(0, token)
    assert slots.acquire(0, grace_seconds=60)  # the scaler gave the slot to a new worker
    summary = run_worker(real_time_worker(world, worker_idle_seconds=30), slot=SlotLease(slots, 0, token))
    assert summary.reason.startswith("slot taken over")


def test_an_image_waiting_behind_a_slow_terminal_step_keeps_its_lease(world: PipelineWorld, kit) -> None:
    """Finding 5: the heartbeat stopped at upload's end while the image waited for the previous image's slow
    publish, so its claim lapsed and another worker upscaled it again. Leases now live until settled."""
    events = [world.upload(f"uploads/slow/{i}.png", kit.image(), FAST) for i in range(2)]
    for event in events:
        world.run_intake(event)
    worker = real_time_worker(world, worker_idle_seconds=5, work_visibility_seconds=3, encode_workers=1)
    sns = worker.lifecycle._notifier._sns
    renewals: list[float] = []

    class SlowSns:
        """The first publish is held until the other image's lease has been renewed twice while it waits."""

        def __getattr__(self, name: str):
            return getattr(sns, name)

        def publish(self, **kwargs):
            if not renewals:
                deadline = time.monotonic() + 60
                while not (running := [e for e in events if world.record(e).state is JobState.RUNNING]):
                    assert time.monotonic() < deadline, "the second image was never claimed"
                    time.sleep(0.1)
                waiting = running[0]
                start = world.record(waiting).number("claim_until")
                while time.monotonic() < deadline:
                    now = world.record(waiting).number("claim_until")
                    if now >= start + 2:  # two heartbeats (a second each) moved it on
                        renewals.append(now - start)
                        break
                    time.sleep(0.1)
            return sns.publish(**kwargs)

    worker.lifecycle._notifier._sns = SlowSns()
    summary = run_worker(worker)
    assert renewals, "the waiting image's lease was not renewed during the other's slow terminal step"
    assert summary.done == 2 and len(world.engine.calls) == 2  # nobody upscaled an image twice
    assert all(world.record(e).state is JobState.SUCCEEDED and world.record(e).number("attempts") == 1
               for e in events)


def test_images_that_do_not_fit_the_memory_budget_together_pass_the_gpu_one_after_another(
        world: PipelineWorld, kit) -> None:
    """Each image's peak is more than the job's memory share: the next is admitted only once the one before
    is encoded and settled (never two in memory), and none waits forever."""
    events = [world.upload(f"uploads/big/{i}.png", kit.image(8 + i, 8), FAST) for i in range(3)]
    for event in events:
        world.run_intake(event)
    world.engine.peak_bytes = 2**30

    def encode_until_another_forward_starts() -> None:
        """Without the budget the next image's forward would start beside this encode: wait for that (a
        few seconds at most), so the order below fails if it can happen."""
        forwards = sum(stage == "infer" for stage, _ in world.engine.stages)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sum(s == "infer" for s, _ in world.engine.stages) == forwards:
            time.sleep(0.05)

    world.engine.during_encode = encode_until_another_forward_starts
    summary = run_worker(real_time_worker(world, worker_idle_seconds=1, worker_memory_mib=1024, encode_workers=2))
    assert summary.done == 3 and all(world.record(e).state is JobState.SUCCEEDED for e in events)
    stages = world.engine.stages
    assert [stage for stage, _ in stages] == ["infer", "encoded"] * 3, stages
    assert all(stages[i][1] == stages[i + 1][1] for i in range(0, 6, 2))  # each encoded before the next forward
