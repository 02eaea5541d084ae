"""`python -m local_stack.faults.worker`: the real worker (`gpu_batch.worker`) on a host with faults of its own.

* A clock that runs `FAULT_CLOCK_OFFSET_SECONDS` ahead (or behind, negative) of the others': `time.time`
  and `datetime.now` are offset before the worker is imported, so its leases and timestamps are skewed as
  on a host whose NTP sync failed.
* A poison image: an input whose bytes contain POISON_MARKER kills the process with SIGKILL right after
  its download, as the OOM killer would, every time any worker tries it. Before dying it prints one JSON
  line (POISON_MESSAGE with the job id), so a run can count the real attempts.

Production code knows nothing of either: the fault runner starts workers through this module.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import time
from typing import Any

CLOCK_OFFSET_ENV = "FAULT_CLOCK_OFFSET_SECONDS"
POISON_MARKER = b"upscaler-chaos-poison"
POISON_MESSAGE = "poison image: the worker dies"


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


def poison_on_download() -> None:
    """Wrap the worker's input download: a poison image kills the process."""
    from gpu_batch.worker import item

    real = item.download_input

    def download(s3: Any, params: Any) -> tuple[bytes, str | None]:
        data, version = real(s3, params)
        if POISON_MARKER in data:
            print(json.dumps({"message": POISON_MESSAGE, "job_id": params.job_id}), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return data, version

    item.download_input = download


def main() -> int:
    offset = float(os.environ.get(CLOCK_OFFSET_ENV) or 0)
    if offset:
        skew_clock(offset)
    poison_on_download()
    from gpu_batch.worker.main import main as worker_main

    return worker_main()


if __name__ == "__main__":
    sys.exit(main())
