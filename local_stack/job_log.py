"""The human log of `upscaler local up`: one line per job state change, read from the jobs table.

    12:01:03 coffee.jpg accepted
    12:01:04 coffee.jpg accepted -> running (worker 1)
    12:01:07 coffee.jpg accepted -> running (worker 1) -> succeeded 3.2 s
    12:01:07 coffee.jpg accepted -> running (worker 1) -> succeeded 3.2 s -> webhook delivered

Each line carries the job's story so far, so the last line of a job says everything. The watcher polls the
table (records are the single source of truth; it never writes), and webhook deliveries are reported by
the local stack's SNS stand-in through `delivered`.
"""

from __future__ import annotations

import json
import logging
import numbers
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from common.contract import TERMINAL_EVENTS, JobState

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
_ENDED_BY = {str(event): state for state, event in TERMINAL_EVENTS.items()}


@dataclass(slots=True)
class _Story:
    name: str
    steps: list[str] = field(default_factory=list)


def describe(state: JobState, attributes: Mapping[str, Any]) -> str:
    """One step of a job's story, in words."""
    if state is JobState.RUNNING:
        slot = (attributes.get("worker") or {}).get("slot") if isinstance(attributes.get("worker"), Mapping) else None
        return f"running (worker {slot})" if slot not in (None, "") else "running"
    if state is JobState.SUCCEEDED:
        durations = attributes.get("durations") or {}
        seconds = durations.get("inference") if isinstance(durations, Mapping) else None
        if isinstance(seconds, numbers.Number) and not isinstance(seconds, bool):  # DynamoDB gives Decimal
            return f"succeeded {float(seconds):.1f} s"  # type: ignore[arg-type]
        return "succeeded"
    if state in (JobState.FAILED, JobState.REJECTED):
        code = attributes.get("error_code")
        return f"{state.value.lower()} ({code})" if code else state.value.lower()
    return state.value.lower().replace("_", " ")


class JobLog:
    """Turns job records (and webhook deliveries) into human lines on `out`."""

    def __init__(self, out: TextIO, *, upload_prefix: str = "",
                 clock: Callable[[], datetime] = datetime.now) -> None:
        self._out = out
        self._prefix = upload_prefix
        self._clock = clock
        self._stories: dict[str, _Story] = {}
        self._states: dict[str, JobState] = {}
        self._lock = threading.Lock()

    def observe(self, item: Mapping[str, Any]) -> None:
        """A job record as read from the table (plain values); prints a line when its state changed."""
        try:
            job_id, state = str(item["job_id"]), JobState(str(item["state"]))
        except (KeyError, ValueError):
            return  # not a job (a worker slot) or a state this log does not know yet
        with self._lock:
            seen = self._states.get(job_id)
            if seen is state or (seen is not None and seen.is_terminal):
                return  # unchanged, or a read older than the terminal state already shown
            self._states[job_id] = state
            key = str(item.get("input_key", job_id))
            story = self._stories.setdefault(job_id, _Story(key.removeprefix(self._prefix) or key))
            story.steps.append(describe(state, item))
            self._write(story)

    def delivered(self, endpoint: str, message: str) -> None:
        """A webhook accepted a notification (the SNS stand-in calls this). The notification says how the job
        ended, so the story shows that first even when the table has not been polled since."""
        try:
            payload = json.loads(message)
            job_id = str(payload["job_id"])
            state = _ENDED_BY[str(payload["event_type"])]
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            story = self._stories.setdefault(job_id, _Story(job_id))
            seen = self._states.get(job_id)
            if seen is None or not seen.is_terminal:
                self._states[job_id] = state
                error = payload.get("error") or {}
                story.steps.append(describe(state, {"durations": payload.get("durations") or {},
                                                    "error_code": error.get("code")}))
            story.steps.append("webhook delivered")
            self._write(story)

    def _write(self, story: _Story) -> None:
        self._out.write(f"{self._clock():%H:%M:%S} {story.name} {' -> '.join(story.steps)}\n")
        self._out.flush()


class TableWatcher:
    """Polls the jobs table and hands every record to a JobLog until stopped."""

    def __init__(self, job_log: JobLog, *, dynamodb: Any, table: str, every: float = POLL_SECONDS) -> None:
        self._log, self._ddb, self._table, self._every = job_log, dynamodb, table, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-log", daemon=True)

    def start(self) -> TableWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def poll(self) -> None:
        for item in self._items():
            self._log.observe(item)

    def _items(self) -> Iterator[dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer

        plain = TypeDeserializer()
        for page in self._ddb.get_paginator("scan").paginate(TableName=self._table):
            for raw in page["Items"]:
                yield {k: plain.deserialize(v) for k, v in raw.items()}

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.poll()
            except Exception:  # the emulator stopping under us, a transient error: the next poll retries
                log.debug("job log poll failed", exc_info=True)
