"""Keeps every item the worker holds leased until its message is settled: SQS visibility and the claim.

One thread renews them all every `heartbeat_seconds` (a third of the lease): each claim on the job record
first, since the claim is what guards the job, then the visibility of all held messages in one
ChangeMessageVisibilityBatch. The two are independent, so a failed SQS call never skips the DynamoDB renewal
(or the other way round), and an SQS call that fails slowly (botocore retrying HTTP 500s with backoff) cannot
hold the claims back until they lapse: a lapsed claim is taken over by the message's next delivery.

An item held longer than `max_item_seconds` (hung, e.g. in a stuck CUDA call) is no longer renewed: its lease
lapses and another worker takes it over, which counts the attempt as a crash.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from .item import Held, Worker, logger


class LeaseKeeper:
    def __init__(self, worker: Worker, *, on_lost: Callable[[Held], None] | None = None) -> None:
        self._worker = worker
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._on_lost = on_lost
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def add(self, held: Held) -> None:
        with self._lock:
            self._held[held.delivery.receipt_handle] = held

    def remove(self, held: Held) -> None:
        with self._lock:
            self._held.pop(held.delivery.receipt_handle, None)

    def count(self) -> int:
        with self._lock:
            return len(self._held)

    def _run(self) -> None:
        while not self._stop.wait(self._worker.settings.heartbeat_seconds):
            self.renew_all()

    def renew_all(self) -> None:
        settings, clock = self._worker.settings, self._worker.clock
        with self._lock:
            now = clock.monotonic()
            hung = [h for h in self._held.values() if now - h.taken_at > settings.max_item_seconds]
            live = [h for h in self._held.values() if h not in hung and not h.lost]
        for held in hung:
            if not held.lost:
                logger.error("image still in hand after max_item_seconds; no longer renewing its lease",
                             extra={"job_id": held.job_id})
                held.lost = True
        if not live:
            return
        for held in live:
            try:
                if not self._worker.lifecycle.renew(held.claim):
                    logger.warning("claim lost: another delivery took the job over", extra={"job_id": held.job_id})
                    held.lost = True
                    if self._on_lost:
                        self._on_lost(held)
            except Exception:  # a dead keeper would hand the image to a second worker: keep trying
                logger.warning("could not renew a held claim; trying again", extra={"job_id": held.job_id},
                               exc_info=True)
        try:
            refused = self._worker.queue.hide_many([h.delivery for h in live], settings.work_visibility_seconds)
            for delivery in refused:  # e.g. a stale receipt handle: the claim still guards the job
                logger.warning("SQS refused to extend a held item's visibility",
                               extra={"message_id": delivery.message_id})
        except (ClientError, BotoCoreError):  # the claim above still holds the job; the next beat tries again
            logger.warning("could not extend the held items' visibility; trying again", exc_info=True)
