"""The worker's life: take items from the work queue one at a time until idle, too old, or told to stop.

Models load once per process (the engine keeps a session per model), so a Batch job that drains many
uploads pays container start, imports, clients and model load once. An image's terminal step (terminal
write, publish, delete) runs on a second thread while the next image is upscaled, so the GPU does not
wait for DynamoDB and SNS. The worker holds a slot (common.scaling) and renews it while alive; it frees
it when it exits so the scaler can start another.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from common.scaling import WorkerSlots
from common.work_queue import Delivery

from .errors import JobInterrupted
from .item import Disposition, FinishStep, Worker, begin_delivery, logger

MAX_RECEIVE_WAIT_SECONDS = 20  # SQS's longest long poll


@dataclass(slots=True)
class LoopSummary:
    items: int = 0
    done: int = 0
    retried: int = 0
    released: int = 0
    models: set[str] = field(default_factory=set)
    reason: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, disposition: Disposition) -> None:
        with self.lock:
            if disposition is Disposition.DONE:
                self.done += 1
            elif disposition is Disposition.RELEASED:
                self.released += 1
            else:
                self.retried += 1


@dataclass(frozen=True, slots=True)
class SlotLease:
    slots: WorkerSlots
    number: int
    token: str


def run_worker(worker: Worker, *, slot: SlotLease | None = None) -> LoopSummary:
    """Receive and process items until idle for worker_idle_seconds, past worker_max_seconds, or SIGTERM."""
    settings, clock, queue, stop = worker.settings, worker.clock, worker.queue, worker.stop
    summary = LoopSummary()
    keeper = _SlotKeeper(slot, lease_seconds=settings.work_visibility_seconds,
                         every=settings.heartbeat_seconds) if slot else None
    if keeper:
        keeper.start()
    started = last_work = clock.monotonic()
    finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish")
    finishing: Future[None] | None = None
    try:
        while True:
            now = clock.monotonic()
            if stop.requested.is_set():
                summary.reason = "stop signal"
                break
            if keeper and keeper.lost.is_set():
                summary.reason = "slot taken over (this worker started after its slot was given up)"
                break
            if now - started >= settings.worker_max_seconds:
                summary.reason = "worker_max_seconds reached"
                break
            idle = now - last_work
            if idle >= settings.worker_idle_seconds:
                summary.reason = "idle"
                break
            wait = max(1, min(MAX_RECEIVE_WAIT_SECONDS, math.ceil(settings.worker_idle_seconds - idle)))
            try:
                delivery = queue.receive(wait_seconds=wait, visibility_seconds=settings.work_visibility_seconds)
            except (ClientError, BotoCoreError):
                logger.warning("receive failed; trying again", exc_info=True)
                stop.requested.wait(1.0)
                continue
            if delivery is None:
                continue
            if stop.requested.is_set():  # SIGTERM during the long poll: give this one back untouched
                _settle(worker, delivery, Disposition.RELEASED, summary)
                summary.reason = "stop signal"
                break
            summary.items += 1
            try:
                step = begin_delivery(worker, delivery)
            except JobInterrupted:  # only inference is interrupted, and begin_delivery releases it
                step = Disposition.RELEASED
            except Exception:  # one item's trouble never ends the worker: the item comes back
                logger.exception("item failed unexpectedly; it comes back after its visibility timeout")
                step = Disposition.RETRY
            if finishing is not None:
                finishing.result()  # one image's terminal step in flight at a time
                finishing = None
            if isinstance(step, Disposition):
                _settle(worker, delivery, step, summary)
            else:
                finishing = finisher.submit(_finish_and_settle, worker, delivery, step, summary)
            last_work = clock.monotonic()
    finally:
        finisher.shutdown(wait=True)  # the image in hand is finished before the worker exits
        if keeper:
            keeper.stop()
    summary.models = set(worker.models_loaded)
    logger.info("worker exiting", extra={"reason": summary.reason, "items": summary.items, "done": summary.done,
                                         "retried": summary.retried, "released": summary.released,
                                         "models_loaded": sorted(summary.models),
                                         "seconds": round(clock.monotonic() - started, 3)})
    return summary


def _finish_and_settle(worker: Worker, delivery: Delivery, step: FinishStep, summary: LoopSummary) -> None:
    try:
        disposition = step()
    except Exception:  # the item comes back; its record tells the next delivery what is left
        logger.exception("finishing an item failed; it comes back after its visibility timeout")
        disposition = Disposition.RETRY
    _settle(worker, delivery, disposition, summary)


def _settle(worker: Worker, delivery: Delivery, disposition: Disposition, summary: LoopSummary) -> None:
    summary.count(disposition)
    try:
        if disposition is Disposition.DONE:
            worker.queue.delete(delivery)
        elif disposition is Disposition.RELEASED:
            worker.queue.hide(delivery, 0)
    except (ClientError, BotoCoreError):  # it comes back; the job record tells the next worker what is left
        logger.warning("could not settle the item's message", extra={"disposition": str(disposition)},
                       exc_info=True)


class _SlotKeeper:
    """Renews the worker's slot while the process lives; frees it on the way out."""

    def __init__(self, slot: SlotLease, *, lease_seconds: float, every: float) -> None:
        self._slot = slot
        self._lease = lease_seconds
        self._every = every
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slot-heartbeat", daemon=True)

    def start(self) -> None:
        self._renew()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if not self.lost.is_set():
            try:
                self._slot.slots.free(self._slot.number, self._slot.token)
            except (ClientError, BotoCoreError):
                logger.warning("could not free the worker slot; its lease lapses instead", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._renew()

    def _renew(self) -> None:
        try:
            if not self._slot.slots.renew(self._slot.number, self._slot.token, lease_seconds=self._lease):
                self.lost.set()
        except Exception:  # a dead keeper lets the slot lapse and the scaler start one worker too many
            logger.warning("could not renew the worker slot", exc_info=True)
