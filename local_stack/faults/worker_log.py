"""What the workers' JSON log lines say about each job: inferences started, poison deaths, what is in hand.

The worker (gpu_batch.worker) logs one JSON object per line with `message` and, while it works on an
item, `job_id`. A job is "in hand" of a worker from "job claimed" until the worker says it is done with
it (finished, failed, given back or lost); a worker killed meanwhile hit it.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass

from local_stack.faults.worker import INFERENCE_STARTED, POISON_MESSAGE

# The worker's own log messages (gpu_batch/worker/item.py).
CLAIMED = "job claimed"
DONE_WITH_JOB = frozenset({
    "job succeeded", "job failed", "job superseded by a newer upload of its key", "giving the item back",
    "transient failure; the item comes back", "the claim was lost while this worker ran; its holder speaks for the job",
})


@dataclass(frozen=True, slots=True)
class LogLine:
    message: str
    job_id: str | None


def parse_line(line: str) -> LogLine | None:
    """A worker's JSON log line, or None for anything else (a traceback, a library's print)."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("message"), str):
        return None
    job_id = record.get("job_id")
    return LogLine(record["message"], job_id if isinstance(job_id, str) else None)


class WorkerLogs:
    """A thread-safe tally over every worker's lines (`feed` is called from each worker's log pump)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inferences: Counter[str] = Counter()  # job id -> "inference started" lines
        self.poison_deaths: Counter[str] = Counter()  # job id -> workers its poison image killed
        self._in_hand: defaultdict[str, set[str]] = defaultdict(set)  # worker job -> job ids
        self._claims: Counter[str] = Counter()  # worker job -> claims made

    def feed(self, worker: str, line: str) -> LogLine | None:
        parsed = parse_line(line)
        if parsed is None or parsed.job_id is None:
            return parsed
        with self._lock:
            if parsed.message == INFERENCE_STARTED:
                self.inferences[parsed.job_id] += 1
            elif parsed.message == POISON_MESSAGE:
                self.poison_deaths[parsed.job_id] += 1
            elif parsed.message == CLAIMED:
                self._in_hand[worker].add(parsed.job_id)
                self._claims[worker] += 1
            elif parsed.message in DONE_WITH_JOB:
                self._in_hand[worker].discard(parsed.job_id)
        return parsed

    def in_hand(self, worker: str) -> frozenset[str]:
        with self._lock:
            return frozenset(self._in_hand[worker])

    def drop(self, worker: str) -> frozenset[str]:
        """The worker died: what it had in hand (it has nothing now)."""
        with self._lock:
            return frozenset(self._in_hand.pop(worker, set()))

    def claims(self, worker: str) -> int:
        with self._lock:
            return self._claims[worker]
