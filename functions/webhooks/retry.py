"""What happens to a delivery message after an attempt: done, tried again later, or dead-lettered.

A pure function of the attempt's outcome, the message's age and its receive count, and a clock, so the
24-hour promise is tested without waiting. It relies on these SQS facts:

* A message's visibility can be extended at most 12 hours from when it was received
  (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-visibility-timeout.html):
  a retry is a visibility change, so no single delay may come near 12 h.
* ApproximateReceiveCount counts every receive, also ones that never reached the function, so it only
  shapes the backoff; the 24 h bound is the message's age (SentTimestamp: when SNS put it on the queue).
* A message older than the queue's retention is deleted, never moved to a dead-letter queue
  (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html),
  so the function moves it to the DLQ itself at 24 h, and the queue keeps messages well past that.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from functions.webhooks.delivery import Attempt, Verdict

SQS_MAX_VISIBILITY_SECONDS = 12 * 3600
GIVE_UP_AFTER_SECONDS = 24 * 3600
FIRST_RETRY_SECONDS = 30
MAX_RETRY_SECONDS = 3600

# The delivery queue and its function (infra/constructs/webhook_delivery.py and the local stack share these).
BATCH_SIZE = 5  # records per invocation
# Each record takes at most sender.DNS_TIMEOUT_SECONDS + sender.TOTAL_TIMEOUT_SECONDS.
FUNCTION_TIMEOUT_SECONDS = 120
QUEUE_VISIBILITY_SECONDS = 6 * FUNCTION_TIMEOUT_SECONDS  # AWS's guidance for Lambda consumers of SQS
QUEUE_RETENTION_SECONDS = 4 * 86_400  # well past GIVE_UP_AFTER_SECONDS: retention never deletes a message
# The queue's own redrive: a message the function never finishes (it crashes or times out each time)
# still reaches the DLQ. Far above the receives a message needs in 24 h of backoff.
MAX_RECEIVE_COUNT = 100


class Action(enum.StrEnum):
    DONE = "done"  # delivered, or nothing to deliver: delete the message
    RETRY = "retry"  # leave it on the queue, invisible for `delay_seconds`
    DEAD = "dead"  # move it to the dead-letter queue, then delete it


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    reason: str
    delay_seconds: int = 0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_retry_seconds: int = FIRST_RETRY_SECONDS
    max_retry_seconds: int = MAX_RETRY_SECONDS
    give_up_after_seconds: int = GIVE_UP_AFTER_SECONDS

    def __post_init__(self) -> None:
        # The visibility change happens moments after the receive; keep a function timeout's margin anyway.
        if not 0 < self.first_retry_seconds <= self.max_retry_seconds <= (
                SQS_MAX_VISIBILITY_SECONDS - FUNCTION_TIMEOUT_SECONDS):
            raise ValueError("retry delays must be positive, ordered, and well under SQS's 12 h visibility limit")

    def backoff(self, receive_count: int, jitter: float) -> int:
        """Exponential in the receive count, capped; `jitter` in [0, 1) spreads it over its upper half so
        the retries of one receiver's many messages do not arrive together."""
        exponent = min(max(receive_count, 1) - 1, 30)
        base = min(self.max_retry_seconds, self.first_retry_seconds * 2 ** exponent)
        return max(1, round(base * (0.5 + jitter / 2)))


def next_step(attempt: Attempt, *, sent_at: float, receive_count: int, now: float, jitter: float = 0.0,
              policy: RetryPolicy = RetryPolicy()) -> Step:
    """`sent_at` and `now` in epoch seconds; `receive_count` is SQS's ApproximateReceiveCount."""
    if attempt.verdict in (Verdict.DELIVERED, Verdict.SKIPPED):
        return Step(Action.DONE, attempt.detail)
    if attempt.verdict is Verdict.PERMANENT:
        return Step(Action.DEAD, attempt.detail)
    age = max(0.0, now - sent_at)
    left = policy.give_up_after_seconds - age
    if left <= 0:
        hours = policy.give_up_after_seconds / 3600
        return Step(Action.DEAD, f"gave up after {hours:g} h of retries; last: {attempt.detail}")
    # The last retry lands at the deadline, not past it.
    delay = min(policy.backoff(receive_count, jitter), max(1, int(left)))
    return Step(Action.RETRY, attempt.detail, delay)
