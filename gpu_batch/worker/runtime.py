"""Process-level concerns: the clock, SIGTERM handling and what hardware the job runs on."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import FrameType

from common.contract import BATCH_ATTEMPT_ENV

from .errors import JobInterrupted


class SystemClock:
    """Wall time for timestamps, a monotonic clock for durations. Tests inject their own."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


_state = threading.local()


def _in_critical_section() -> bool:
    return getattr(_state, "depth", 0) > 0


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _in_critical_section():
        return  # finish the terminal write and notification first; the process exits right after
    raise JobInterrupted(f"received signal {signal.Signals(signum).name}")


def install_signal_handlers() -> None:
    """SIGTERM (Batch timeout/termination, spot reclaim) interrupts the job unless it is finishing."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, _on_sigterm)


@contextlib.contextmanager
def critical_section() -> Iterator[None]:
    """Defer SIGTERM while the terminal state is written and the notification is published.

    Batch waits (stopTimeout) after SIGTERM before SIGKILL: a few DynamoDB/SNS calls fit in it.
    """
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


def batch_attempt(env: Mapping[str, str]) -> int:
    """AWS_BATCH_JOB_ATTEMPT (1-based; the local job queue sets it too), 1 when absent."""
    try:
        return max(1, int(env.get(BATCH_ATTEMPT_ENV, "1")))
    except ValueError:
        return 1
