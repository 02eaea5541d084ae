"""The lease clock follows AWS's clock, not a host's skewed one (common.clock)."""

from __future__ import annotations

from email.utils import formatdate

from common.clock import ServerClock

TRUE_NOW = 1_800_000_000.0


def test_a_host_30_seconds_behind_reads_aws_time_from_its_answers() -> None:
    local = {"t": TRUE_NOW - 30}
    clock = ServerClock(local=lambda: local["t"])
    assert clock.now() == TRUE_NOW - 30  # no answer yet: the local clock as it is
    for _ in range(5):
        local["t"] += 0.37
        clock.observe_date(formatdate(TRUE_NOW + 30 + local["t"] - TRUE_NOW, usegmt=True))  # AWS's clock
    assert abs(clock.now() - (local["t"] + 30)) <= 1.0  # within the Date header's one-second resolution


def test_one_odd_answer_does_not_move_the_clock_and_garbage_is_ignored() -> None:
    clock = ServerClock(local=lambda: TRUE_NOW)
    for _ in range(4):
        clock.observe_date(formatdate(TRUE_NOW, usegmt=True))
    clock.observe_date(formatdate(TRUE_NOW + 3600, usegmt=True))  # a cached or proxied response
    clock.observe_date("not a date")
    clock.observe_date(None)
    assert abs(clock.offset) <= 1.0
