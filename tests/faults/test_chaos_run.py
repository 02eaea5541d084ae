"""A short seeded chaos run of the whole local pipeline (real handlers, real workers, real inference), then the
promise's invariants. Safety properties plus liveness with a generous deadline: nothing timing-dependent."""

from __future__ import annotations

import pytest

from local_stack.faults.runner import ChaosConfig, ChaosResult, run

pytestmark = pytest.mark.slow

# Seed 27 over this mix arms a version race, a stale receipt handle, a GPU outage, a spot reclaim, DynamoDB
# throttling, a lost publish response and two kills mid-inference of one job among 16 uploads (one poison).
MIX = ("kill-inference", "kill-after-publish", "kill-before-terminal", "sns-lost-response", "ddb-throttle",
       "sqs-visibility", "sqs-stale-receipt", "duplicate-event", "version-race", "spot-reclaim", "no-capacity",
       "clock-skew")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> ChaosResult:
    return run(ChaosConfig(uploads=16, seed=27, faults=MIX, rate=0.35, settle_timeout_seconds=300,
                           log_path=tmp_path_factory.mktemp("chaos") / "chaos.log"))


def test_the_faults_happened_and_every_upload_was_accounted_for(result: ChaosResult) -> None:
    """The harness itself: the schedule's faults hit, and the history covers every upload (a run where
    nothing happened, or nothing was looked at, would prove nothing)."""
    assert {a.fault for a in result.armed} >= {"spot-reclaim", "no-capacity", "kill-inference"}
    assert sum(1 for a in result.armed if a.hits) >= 3
    assert len({v.key for v in result.history.versions}) == 16  # a version race uploads one key twice
    assert [v.number for v in result.verdicts] == [1, 2, 3, 4, 5, 6, 7]
    assert sum(v.inferences for v in result.history.versions) >= 14  # the healthy ones were upscaled


def test_a_short_seeded_chaos_run_keeps_every_invariant(result: ChaosResult) -> None:
    broken = [f"{v.number}. {text}" for v in result.verdicts for text in v.violations]
    assert not broken, f"{len(broken)} violations (logs: {result.log_path}):\n" + "\n".join(broken)
