"""Process-level concerns: the clock, SIGTERM handling and what hardware the worker runs on."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from types import FrameType
from typing import Protocol

from common.clock import server_time

from .errors import JobInterrupted


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class SystemClock:
    """Wall time as AWS keeps it (common.clock: this host's clock corrected by AWS's answers) for timestamps and
    leases, a monotonic clock for durations. Tests inject their own."""

    def now(self) -> datetime:
        return datetime.fromtimestamp(server_time(), UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return server_time()


class StopSignal:
    """SIGTERM (spot reclaim, Batch termination): stop taking items, and give back the one in hand.

    The signal sets `requested`. While an image is in inference (`busy`), it also interrupts it
    (JobInterrupted in the main thread), and the worker releases the claim it holds; anywhere else the
    worker checks `requested` at its next step (before inference, after a receive) and the image in
    hand is finished or given back. It frees its slot and exits well within Batch's stop timeout.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.busy = False  # an item is in hand (set by the loop)

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested.set()
        if self.busy and not _in_critical_section():
            raise JobInterrupted(f"received signal {signal.Signals(signum).name}")


_state = threading.local()


def _in_critical_section() -> bool:
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def critical_section() -> Iterator[None]:
    """Defer SIGTERM's interruption while a terminal state is written and its notification published."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def gpu_name() -> str | None:
    """`nvidia-smi`'s name of the first GPU, or None on a machine without one."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()[0] if out.strip() else ""
    return first or None
