"""The worker's life: a pipeline over the work queue until idle, too old, or told to stop.

    prefetch thread  receive -> claim -> download -> decode     holds at most `prefetch_images` decoded images
                     -> admitted within the memory budget          (memory_budget.py)
    main thread      the GPU forward, one image at a time        SIGTERM interrupts it: the image is given back
    encode pool      encode -> output -> terminal write -> delete   `encode_workers` threads, one more queued

While the GPU runs image N, image N+1 is already claimed, downloaded and decoded and image N-1 is encoded and
uploaded, so the GPU waits neither for S3 nor for DynamoDB, SNS or an encoder. The images held at once never
need more than JOB_MEMORY_SHARE of the job's memory together (each counted at its peak stage), so large images
wait for each other instead of getting the worker killed for memory (a kill counts against them). Every item
is leased (SQS visibility and claim) from its claim until its message is settled (leases.py). On SIGTERM the
worker stops receiving, gives back the image in inference and every prefetched one at once (a fresh copy each:
no attempt is spent), lets the encodes in flight finish, frees its slot and exits. Models load once per
process.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from common.scaling import WorkerSlots
from gpu_batch.engine.memory import JOB_MEMORY_SHARE

from .errors import JobInterrupted
from .item import Disposition, Held, Worker, complete, conclude_failure, give_back, logger, take, upscale
from .leases import LeaseKeeper
from .memory_budget import HostMemoryBudget

MAX_RECEIVE_WAIT_SECONDS = 2  # short long-polls: a SIGTERM or an idle exit is noticed within seconds
POLL_SECONDS = 0.2


@dataclass(slots=True)
class LoopSummary:
    items: int = 0  # deliveries taken (claimed or settled at once)
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


def encode_workers(configured: int) -> int:
    """Threads that encode beside the GPU: as configured, else the host's vCPUs less one for the GPU feeder."""
    return configured or max(1, (os.cpu_count() or 2) - 1)


def run_worker(worker: Worker, *, slot: SlotLease | None = None) -> LoopSummary:
    """Receive and process items until idle for worker_idle_seconds, past worker_max_seconds, or SIGTERM."""
    settings = worker.settings
    summary = LoopSummary()
    slot_keeper = _SlotKeeper(slot, lease_seconds=settings.work_visibility_seconds,
                              every=settings.heartbeat_seconds) if slot else None
    if slot_keeper:
        slot_keeper.start()
    keeper = LeaseKeeper(worker)
    keeper.start()
    pipeline = _Pipeline(worker, keeper, summary, slot_keeper)
    started = worker.clock.monotonic()
    try:
        summary.reason = pipeline.run()
    finally:
        pipeline.shutdown()
        keeper.stop()
        if slot_keeper:
            slot_keeper.stop()
    summary.models = set(worker.models_loaded)
    logger.info("worker exiting", extra={"reason": summary.reason, "items": summary.items, "done": summary.done,
                                         "retried": summary.retried, "released": summary.released,
                                         "models_loaded": sorted(summary.models),
                                         "seconds": round(worker.clock.monotonic() - started, 3)})
    return summary


class _Pipeline:
    def __init__(self, worker: Worker, keeper: LeaseKeeper, summary: LoopSummary,
                 slot_keeper: _SlotKeeper | None) -> None:
        settings = worker.settings
        self._worker, self._keeper, self._summary, self._slot = worker, keeper, summary, slot_keeper
        self._ready: queue.Queue[Held] = queue.Queue(maxsize=max(1, settings.prefetch_images))
        self._receiving = threading.Event()  # cleared: the prefetcher takes no more items
        self._receiving.set()
        self._busy = threading.Event()  # the prefetcher is between a receive and handing the item over
        self._started = self._last_work = worker.clock.monotonic()
        threads = encode_workers(settings.encode_workers)
        self._encoders = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="encode")
        self._encode_slots = threading.BoundedSemaphore(threads + 1)  # inferred images waiting or encoding
        self._memory = HostMemoryBudget(int(settings.worker_memory_mib * 2**20 * JOB_MEMORY_SHARE))
        self._prefetcher = threading.Thread(target=self._prefetch, name="prefetch", daemon=True)

    # --- the GPU stage (main thread) -----------------------------------------------------------------
    def run(self) -> str:
        self._prefetcher.start()
        stop, clock, settings = self._worker.stop, self._worker.clock, self._worker.settings
        while True:
            if stop.requested.is_set():
                return "stop signal"
            if self._slot and self._slot.lost.is_set():
                return "slot taken over (this worker started after its slot was given up)"
            now = clock.monotonic()
            old = now - self._started >= settings.worker_max_seconds
            if old:
                self._receiving.clear()  # finish what is in hand, take nothing new
            if self._drained():
                if old:
                    return "worker_max_seconds reached"
                if now - self._last_work >= settings.worker_idle_seconds:
                    return "idle"
            try:
                held = self._ready.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            self._forward(held)

    def _forward(self, held: Held) -> None:
        try:
            upscale(self._worker, held)
        except JobInterrupted as exc:
            self._done(held, give_back(self._worker, held, reason=str(exc)))
            return
        except Exception as exc:  # its own failure: FAILED, or back for another try
            self._done(held, conclude_failure(self._worker, held, exc))
            return
        self._encode_slots.acquire()  # bounded: the GPU waits rather than piling up inferred images
        self._encoders.submit(self._complete, held)

    def _complete(self, held: Held) -> None:
        try:
            self._done(held, complete(self._worker, held))
        finally:
            self._encode_slots.release()

    def _done(self, held: Held, disposition: Disposition) -> None:
        self._keeper.remove(held)
        if held.host_bytes is not None:
            self._memory.release(held.host_bytes)
            held.host_bytes = None
        self._summary.count(disposition)
        self._last_work = self._worker.clock.monotonic()

    def _drained(self) -> bool:
        """Nothing in hand: no item being taken, decoded, waiting, in the GPU or encoding."""
        return not self._busy.is_set() and self._ready.empty() and self._keeper.count() == 0

    # --- the prefetch stage -------------------------------------------------------------------------------
    def _prefetch(self) -> None:
        worker, settings = self._worker, self._worker.settings
        while self._receiving.is_set() and not worker.stop.requested.is_set():
            if self._ready.full():
                worker.stop.requested.wait(POLL_SECONDS)
                continue
            if worker.clock.monotonic() - self._started >= settings.worker_max_seconds:
                return
            try:
                self._take_one()
            except Exception:  # one item's trouble never ends the worker: the item comes back
                logger.exception("taking an item failed; it comes back after its visibility timeout")
            finally:
                self._busy.clear()

    def _take_one(self) -> None:
        worker, settings = self._worker, self._worker.settings
        try:
            delivery = worker.queue.receive(wait_seconds=MAX_RECEIVE_WAIT_SECONDS,
                                            visibility_seconds=settings.work_visibility_seconds)
        except (ClientError, BotoCoreError):
            logger.warning("receive failed; trying again", exc_info=True)
            worker.stop.requested.wait(1.0)
            return
        if delivery is None:
            return
        self._busy.set()
        self._last_work = worker.clock.monotonic()
        if worker.stop.requested.is_set() or not self._receiving.is_set():
            # SIGTERM during the long poll: hand it back untouched, without spending a receive
            worker.queue.give_back(delivery)
            self._summary.count(Disposition.RELEASED)
            return
        with self._summary.lock:
            self._summary.items += 1
        taken = take(worker, delivery)
        if not isinstance(taken, Held):
            self._summary.count(taken)
            return
        self._keeper.add(taken)
        if not self._admit(taken):
            self._done(taken, give_back(worker, taken, reason="stopping while the item waited for memory"))
            return
        while not worker.stop.requested.is_set():
            try:
                self._ready.put(taken, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue
        self._done(taken, give_back(worker, taken, reason="stopping with the item prefetched"))

    def _admit(self, held: Held) -> bool:
        """Wait (leases kept) until the image's peak fits beside the images held; False on SIGTERM."""
        worker = self._worker
        try:
            peak = worker.engine.peak_host_bytes(held.prepared, worker.settings.tile_size)
        except Exception:  # an estimate that fails must not fail the image: it runs alone instead
            logger.warning("could not estimate the image's memory; it runs alone", exc_info=True)
            peak = self._memory.limit
        if not self._memory.fits(peak):
            logger.info("image waits for memory", extra={"peak_mib": peak >> 20, "held_mib": self._memory.held >> 20})
        if not self._memory.acquire(peak, unless=worker.stop.requested, poll_seconds=POLL_SECONDS):
            return False
        held.host_bytes = peak
        return True

    # --- the way out ------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop receiving; give back what waits for the GPU; let the encodes in flight finish."""
        self._receiving.clear()
        self._prefetcher.join(timeout=MAX_RECEIVE_WAIT_SECONDS + 30)
        while True:
            try:
                held = self._ready.get_nowait()
            except queue.Empty:
                break
            self._done(held, give_back(self._worker, held, reason="the worker is stopping"))
        self._encoders.shutdown(wait=True)


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
        # The first answer from AWS corrects this host's lease clock (common.clock); renewing once more at once
        # writes a lease that a host 30 s off would otherwise have made look lapsed to the scaler.
        self._renew()
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
