"""Type-only: `make test`'s mypy checks each shared test fake against the Protocol the real code declares.

The real classes are checked where the code builds them (e.g. gpu_batch/worker/main.py passes Engine as
the worker's Upscaler), so a fake that drifts from the Protocol, and so from the real class, fails mypy.
"""

from __future__ import annotations

from fake_engine import FakeEngine, FakeInferred, FakePrepared
from pipeline_world import FakeClock

from gpu_batch.worker.item import Upscaler
from gpu_batch.worker.runtime import Clock


def engine(fake: FakeEngine) -> Upscaler[FakePrepared, FakeInferred]:
    return fake


def clock(fake: FakeClock) -> Clock:
    return fake
