"""The worker's faulty host (local_stack.faults.worker), each in a process of its own: a skewed clock, and a
poison image that kills the worker as its inference starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

SKEW = """
import time, datetime
before = time.time()
from local_stack.faults.worker import skew_clock
skew_clock(-30)
from datetime import datetime as imported_after, UTC
print(round(time.time() - before), round(imported_after.now(UTC).timestamp() - before))
"""

POISON = """
import sys
from local_stack.faults.worker import _PoisonWatch
sys.stdout = _PoisonWatch(sys.stdout, {"poisoned-job"})
print('{"message": "inference started", "job_id": "healthy-job"}', flush=True)
print('{"message": "job claimed", "job_id": "poisoned-job"}', flush=True)
print('{"message": "inference started", "job_id": "poisoned-job"}', flush=True)
print("never printed", flush=True)
"""


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_a_skewed_host_has_every_wall_clock_off_by_the_offset() -> None:
    done = run(SKEW)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["-30", "-30"]


def test_a_poison_image_kills_its_worker_as_inference_starts_and_says_so_first() -> None:
    done = run(POISON)
    assert done.returncode == -signal.SIGKILL
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(line["message"], line["job_id"]) for line in lines] == [
        ("inference started", "healthy-job"), ("job claimed", "poisoned-job"),
        ("inference started", "poisoned-job"), ("poison image: the worker dies", "poisoned-job")]
