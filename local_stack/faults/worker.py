"""`python -m local_stack.faults.worker`: the real worker (`gpu_batch.worker`) on a host with faults of its own.

* A clock that runs `FAULT_CLOCK_OFFSET_SECONDS` ahead (or behind, negative) of the others': `time.time`
  and `datetime.now` are offset before the worker is imported, so its leases and timestamps are skewed as
  on a host whose NTP sync failed.
* A poison image: an input whose bytes contain POISON_MARKER kills the process with SIGKILL as its inference
  starts (the moment the worker logs INFERENCE_STARTED for it), as a GPU out-of-memory kill would, every time
  any worker tries it. Before dying it prints one JSON line (POISON_MESSAGE with the job id), so a run can
  count the real attempts.

Production code knows nothing of either: the fault runner starts workers through this module.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import sys
import time
from typing import Any, TextIO

CLOCK_OFFSET_ENV = "FAULT_CLOCK_OFFSET_SECONDS"
POISON_MARKER = b"upscaler-chaos-poison"
POISON_MESSAGE = "poison image: the worker dies"
INFERENCE_STARTED = "inference started"  # the worker's log line as it starts the network on an image


def skew_clock(offset: float) -> None:
    """Offset this process's wall clock (time.time, time.time_ns, datetime.now/utcnow) by `offset` seconds."""
    real_time, real_time_ns = time.time, time.time_ns
    time.time = lambda: real_time() + offset
    time.time_ns = lambda: real_time_ns() + int(offset * 1e9)
    shift = dt.timedelta(seconds=offset)
    real_datetime = dt.datetime

    class SkewedDatetime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Any:
            return real_datetime.now(tz) + shift

        @classmethod
        def utcnow(cls) -> Any:
            return real_datetime.now(dt.UTC).replace(tzinfo=None) + shift

    dt.datetime = SkewedDatetime  # type: ignore[misc]  # modules imported from here on see the skewed clock


class _PoisonWatch(io.TextIOBase):
    """stdout, watched: the worker's "inference started" line for a poisoned job is its last."""

    def __init__(self, stream: TextIO, poisoned: set[str]) -> None:
        self._stream = stream
        self._poisoned = poisoned

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        if INFERENCE_STARTED in text:
            doomed = next((job for job in list(self._poisoned) if job in text), None)
            if doomed:
                line_break = "" if text.endswith("\n") else "\n"
                self._stream.write(line_break + json.dumps({"message": POISON_MESSAGE, "job_id": doomed}) + "\n")
                self._stream.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return written

    def flush(self) -> None:
        self._stream.flush()


def poison_at_inference() -> None:
    """Remember every downloaded input that carries POISON_MARKER; die as its inference starts. Before the worker
    is imported: its logger writes to the stdout it finds then."""
    poisoned: set[str] = set()
    sys.stdout = _PoisonWatch(sys.stdout, poisoned)
    from gpu_batch.worker import item

    real = item.download_input

    def download(s3: Any, params: Any) -> tuple[bytes, str | None]:
        data, version = real(s3, params)
        if POISON_MARKER in data:
            poisoned.add(params.job_id)
        return data, version

    item.download_input = download


def main() -> int:
    offset = float(os.environ.get(CLOCK_OFFSET_ENV) or 0)
    if offset:
        skew_clock(offset)
    poison_at_inference()
    from gpu_batch.worker.main import main as worker_main

    return worker_main()


if __name__ == "__main__":
    sys.exit(main())
