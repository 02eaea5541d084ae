"""Keeps every item the worker holds leased until its message is settled: SQS visibility and the claim.

Two threads renew them every `heartbeat_seconds` (a third of the lease): one each claim on the job record, the
other the visibility of all held messages in one ChangeMessageVisibilityBatch. They are independent, so a
failed SQS call never skips the DynamoDB renewal (or the other way round), and an SQS call that is slow (botocore
retrying HTTP 500s with backoff, or waiting out its read timeout several times) cannot hold the claims back until
they lapse: the claim is what guards the job, and a lapsed one is taken over by the message's next delivery.

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
        self._threads = [threading.Thread(target=self._every_beat, args=(renew,), name=name, daemon=True)
                         for renew, name in ((self.renew_claims, "claim-keeper"),
                                             (self.extend_visibility, "visibility-keeper"))]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def add(self, held: Held) -> None:
        with self._lock:
            self._held[held.delivery.receipt_handle] = held

    def remove(self, held: Held) -> None:
        with self._lock:
            self._held.pop(held.delivery.receipt_handle, None)

    def count(self) -> int:
        with self._lock:
            return len(self._held)

    def renew_all(self) -> None:
        """One beat of both renewals, claims first."""
        self.renew_claims()
        self.extend_visibility()

    def _every_beat(self, renew: Callable[[], None]) -> None:
        while not self._stop.wait(self._worker.settings.heartbeat_seconds):
            renew()

    def _live(self) -> list[Held]:
        """The held items still renewed; one in hand past `max_item_seconds` is let go (marked lost) here."""
        settings, clock = self._worker.settings, self._worker.clock
        with self._lock:
            now = clock.monotonic()
            for held in self._held.values():
                if not held.lost and now - held.taken_at > settings.max_item_seconds:
                    logger.error("image still in hand after max_item_seconds; no longer renewing its lease",
                                 extra={"job_id": held.job_id})
                    held.lost = True
            return [h for h in self._held.values() if not h.lost]

    def renew_claims(self) -> None:
        for held in self._live():
            try:
                if not self._worker.lifecycle.renew(held.claim):
                    logger.warning("claim lost: another delivery took the job over", extra={"job_id": held.job_id})
                    held.lost = True
                    if self._on_lost:
                        self._on_lost(held)
            except Exception:  # a dead keeper would hand the image to a second worker: keep trying
                logger.warning("could not renew a held claim; trying again", extra={"job_id": held.job_id},
                               exc_info=True)

    def extend_visibility(self) -> None:
        live = self._live()
        if not live:
            return
        try:
            refused = self._worker.queue.hide_many([h.delivery for h in live],
                                                   self._worker.settings.work_visibility_seconds)
            for delivery in refused:  # e.g. a stale receipt handle: the claim still guards the job
                logger.warning("SQS refused to extend a held item's visibility",
                               extra={"message_id": delivery.message_id})
        except (ClientError, BotoCoreError):  # the claim still holds the job; the next beat tries again
            logger.warning("could not extend the held items' visibility; trying again", exc_info=True)
