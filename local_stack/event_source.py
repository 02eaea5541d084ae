"""A local SQS -> Lambda event source mapping: long polling, batches, partial batch failures.

Messages the handler reports as failed (or a whole batch whose invocation raised) are left on the
queue; SQS makes them visible again after the queue's visibility timeout and, after the
RedrivePolicy's maxReceiveCount, moves them to the DLQ (moto honours RedrivePolicy).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from local_stack.sqs_events import failed_message_ids, sqs_event

log = logging.getLogger(__name__)

Invoke = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class MappingConfig:
    batch_size: int = 10  # AWS default for SQS
    batching_window_seconds: float = 0.0  # MaximumBatchingWindowInSeconds (AWS default 0)
    pollers: int = 2  # concurrent batches (Lambda scales pollers with the backlog)
    wait_time_seconds: int = 1  # long poll; short so stop() is prompt


@dataclass
class MappingStats:
    batches: int = 0
    records: int = 0
    deleted: int = 0
    failed: int = 0
    invocation_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class SqsEventSourceMapping:
    def __init__(self, *, sqs: Any, queue_url: str, queue_arn: str, region: str, invoke: Invoke,
                 config: MappingConfig = MappingConfig(), name: str = "event-source",
                 tap: Callable[[Sequence[Mapping[str, Any]]], None] | None = None) -> None:
        """`tap` sees every batch received, before the function does (fault runs duplicate messages there)."""
        if not 1 <= config.batch_size <= 10_000:
            raise ValueError("batch_size must be within 1..10000")
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._region = region
        self._invoke = invoke
        self._config = config
        self._name = name
        self._tap = tap
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.stats = MappingStats()

    def start(self) -> None:
        for i in range(self._config.pollers):
            thread = threading.Thread(target=self._poll_forever, name=f"{self._name}-poller-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._collect_batch()
                if batch:
                    self.process_batch(batch)
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("%s: polling failed; retrying", self._name)
                time.sleep(1.0)

    def _collect_batch(self) -> list[dict[str, Any]]:
        """One long poll; then, within the batching window, fill the batch up to batch_size."""
        batch: list[dict[str, Any]] = []
        deadline: float | None = None
        while len(batch) < self._config.batch_size and not self._stop.is_set():
            if deadline is None:
                wait = self._config.wait_time_seconds
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Whole seconds only (SQS); short, so stop() stays prompt; under 1 s: short polls.
                wait = min(self._config.wait_time_seconds, math.floor(remaining))
            messages = self._sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=min(10, self._config.batch_size - len(batch)),
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                if deadline is None:
                    break  # nothing to do this poll
                if wait == 0:
                    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue  # the window is still open: keep collecting until it closes
            batch.extend(messages)
            if deadline is None:
                deadline = time.monotonic() + self._config.batching_window_seconds
        return batch

    def process_batch(self, messages: Sequence[Mapping[str, Any]]) -> set[str]:
        """Invoke the function with one batch; delete what succeeded. Returns the failed message ids."""
        if self._tap:
            self._tap(messages)
        ids = [m["MessageId"] for m in messages]
        event = sqs_event(messages, queue_arn=self._queue_arn, region=self._region)
        try:
            failed = failed_message_ids(self._invoke(event), ids)
        except Exception as exc:
            log.error("%s: invocation failed, the whole batch returns to the queue: %s", self._name, exc)
            with self.stats.lock:
                self.stats.invocation_errors += 1
            failed = set(ids)
        succeeded = [m for m in messages if m["MessageId"] not in failed]
        self._delete(succeeded)
        with self.stats.lock:
            self.stats.batches += 1
            self.stats.records += len(messages)
            self.stats.deleted += len(succeeded)
            self.stats.failed += len(failed)
        return failed

    def _delete(self, messages: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            resp = self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            for failure in resp.get("Failed", []):
                log.warning("%s: could not delete a processed message: %s", self._name, failure)
