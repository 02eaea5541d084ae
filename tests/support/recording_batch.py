"""A Batch stand-in that only records what it is asked (served by local_stack.batch_api for the Lambdas' tests)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from local_stack.batch_api import LocalBatchApi


@dataclass
class RecordingBatch:
    submitted: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    terminated: list[tuple[str, str]] = field(default_factory=list)
    placements: dict[str, str] = field(default_factory=dict)  # job id -> instance id, for describe
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, job_name: str, environment: Mapping[str, str]) -> str:
        with self.lock:
            self.submitted.append((job_name, dict(environment)))
            return f"local-job-{len(self.submitted)}"

    def terminate(self, job_id: str, reason: str) -> None:
        with self.lock:
            self.terminated.append((job_id, reason))

    def describe(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        return [{"jobId": j, "status": "RUNNING", "instanceId": self.placements.get(j)} for j in job_ids]


@contextmanager
def serving(batch: RecordingBatch) -> Iterator[str]:
    """The recorder behind the local Batch API; yields its URL (Settings.local_batch_url)."""
    api = LocalBatchApi(batch)
    api.start()
    try:
        yield api.url
    finally:
        api.stop()
