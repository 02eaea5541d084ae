"""Retry, give up or done: a pure function of the attempt, the message's age, its receive count and a clock."""

from __future__ import annotations

import itertools

import pytest

from functions.webhooks.delivery import Attempt, Verdict
from functions.webhooks.retry import (
    GIVE_UP_AFTER_SECONDS,
    MAX_RETRY_SECONDS,
    QUEUE_RETENTION_SECONDS,
    SQS_MAX_VISIBILITY_SECONDS,
    Action,
    RetryPolicy,
    next_step,
)

SENT = 1_700_000_000.0
FAILED = Attempt(Verdict.RETRY, "HTTP 503", 503)


def test_delivered_and_skipped_are_done_and_permanent_failures_go_to_the_dlq_at_once() -> None:
    for verdict in (Verdict.DELIVERED, Verdict.SKIPPED):
        assert next_step(Attempt(verdict, "x"), sent_at=SENT, receive_count=1, now=SENT).action is Action.DONE
    dead = next_step(Attempt(Verdict.PERMANENT, "HTTP 404", 404), sent_at=SENT, receive_count=1, now=SENT + 1)
    assert (dead.action, dead.reason) == (Action.DEAD, "HTTP 404")


def test_backoff_doubles_with_each_receive_up_to_the_cap() -> None:
    delays = [next_step(FAILED, sent_at=SENT, receive_count=n, now=SENT + 60).delay_seconds for n in range(1, 12)]
    assert delays[:4] == [15, 30, 60, 120]  # jitter 0: the lower half of 30 s * 2^(n-1)
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert max(delays) == MAX_RETRY_SECONDS // 2
    top = next_step(FAILED, sent_at=SENT, receive_count=50, now=SENT + 60, jitter=0.999).delay_seconds
    assert MAX_RETRY_SECONDS // 2 < top <= MAX_RETRY_SECONDS


def test_a_huge_receive_count_does_not_overflow() -> None:
    step = next_step(FAILED, sent_at=SENT, receive_count=10**9, now=SENT)
    assert step.action is Action.RETRY and step.delay_seconds <= MAX_RETRY_SECONDS


def test_a_receiver_down_for_a_day_gets_retries_for_24_hours_then_the_message_is_dead_lettered() -> None:
    """Simulate the queue: each retry shows the message again after its delay; every try fails."""
    now, receives, tries = SENT, 0, []
    while True:
        receives += 1
        step = next_step(FAILED, sent_at=SENT, receive_count=receives, now=now, jitter=0.5)
        if step.action is not Action.RETRY:
            break
        assert 1 <= step.delay_seconds <= MAX_RETRY_SECONDS < SQS_MAX_VISIBILITY_SECONDS
        tries.append(now)
        now += step.delay_seconds
    assert step.action is Action.DEAD and "24 h" in step.reason and "HTTP 503" in step.reason
    assert now - SENT == pytest.approx(GIVE_UP_AFTER_SECONDS, abs=1)  # the last retry lands on the deadline
    assert now - SENT < QUEUE_RETENTION_SECONDS  # the queue never deletes it first
    assert 20 < len(tries) < 60  # retried all day, not hammered


def test_age_not_receive_count_decides_when_to_give_up() -> None:
    """A message received often (e.g. throttled polls count as receives) is still retried while young..."""
    young = next_step(FAILED, sent_at=SENT, receive_count=500, now=SENT + 3600)
    assert young.action is Action.RETRY
    # ...and one received once is dead-lettered when old (it waited, e.g. behind a disabled trigger).
    old = next_step(FAILED, sent_at=SENT, receive_count=1, now=SENT + GIVE_UP_AFTER_SECONDS)
    assert old.action is Action.DEAD


def test_the_last_delay_is_cut_to_the_deadline() -> None:
    step = next_step(FAILED, sent_at=SENT, receive_count=30, now=SENT + GIVE_UP_AFTER_SECONDS - 100)
    assert (step.action, step.delay_seconds) == (Action.RETRY, 100)


def test_a_policy_near_the_12_hour_visibility_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_retry_seconds=SQS_MAX_VISIBILITY_SECONDS)
    with pytest.raises(ValueError):
        RetryPolicy(first_retry_seconds=0)


def test_a_whole_batch_of_slowest_attempts_fits_in_the_function_timeout() -> None:
    from functions.webhooks.retry import BATCH_SIZE, FUNCTION_TIMEOUT_SECONDS
    from functions.webhooks.sender import DNS_TIMEOUT_SECONDS, TOTAL_TIMEOUT_SECONDS

    assert BATCH_SIZE * (DNS_TIMEOUT_SECONDS + TOTAL_TIMEOUT_SECONDS) < FUNCTION_TIMEOUT_SECONDS
