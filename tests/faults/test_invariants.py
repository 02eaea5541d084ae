"""The invariant checker on hand-made histories: a clean one passes, and each break is caught by its invariant."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest

from local_stack.faults.invariants import Copy, History, VersionOutcome, WorkerJob, check, duplicates


def note(job: str, event_type: str = "upscale.succeeded", *, event_id: str | None = None, extra: str = "",
         code: str | None = None) -> Copy:
    body = {"event_id": event_id or f"e-{job}", "event_type": event_type, "job_id": job, "extra": extra}
    if code:
        body["error"] = {"code": code}
    return Copy(event_id=body["event_id"], attribute_event_id=body["event_id"], event_type=event_type,
                message=json.dumps(body), received_at=1.0)


def version(job: str, key: str, *, state: str = "SUCCEEDED", newest: bool = True, killer: bool = False,
            **changes: object) -> VersionOutcome:
    event = {"SUCCEEDED": "upscale.succeeded", "FAILED": "upscale.failed"}.get(state, "upscale.succeeded")
    base = VersionOutcome(key=key, version=f"v-{job}", job_id=job, newest=newest, killer=killer, state=state,
                          copies=(note(job, event),), terminal_writes=(state,), inferences=0 if killer else 1,
                          poison_deaths=3 if killer else 0, inference_deaths=3 if killer else 0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def clean() -> History:
    return History(
        versions=[version("a", "k1"), version("b", "k2"), version("c", "k3", state="FAILED", killer=True),
                  version("d1", "k4", newest=False), version("d2", "k4")],
        outputs={"k1": "v-a", "k2": "v-b", "k4": "v-d2"},
        worker_jobs=[WorkerJob("w1", "0", 0.0, 50.0), WorkerJob("w2", "1", 1.0, 20.0),
                     WorkerJob("w3", "1", 20.5, 60.0), WorkerJob("w4", "0", 70.0, 80.0)],
        max_attempts=3, max_workers=2)


def replace_version(history: History, job: str, **changes: object) -> History:
    return dataclasses.replace(history, versions=[dataclasses.replace(v, **changes) if v.job_id == job else v
                                                  for v in history.versions])


def test_a_clean_history_holds_every_invariant() -> None:
    verdicts = check(clean())
    assert [v.number for v in verdicts] == [1, 2, 3, 4, 5, 6, 7]
    assert all(v.ok for v in verdicts), [v.violations for v in verdicts]
    assert [v.checked for v in verdicts] == [5, 5, 5, 5, 3, 5, 4]
    assert duplicates(clean()) == 0


# name: (the invariant it breaks, how, a violation's text); "told another outcome" is also a copy that differs (2).
BREAKS: dict[str, tuple[int, Callable[[History], History], str]] = {
    "two terminal writes": (1, lambda h: replace_version(h, "a", terminal_writes=("SUCCEEDED", "FAILED")),
                            "2 terminal writes"),
    "told another outcome": (1, lambda h: replace_version(h, "a", copies=(note("a"), note("a", "upscale.failed"))),
                             "also told upscale.failed"),
    "never told": (2, lambda h: replace_version(h, "b", copies=()), "no notification"),
    "copies differ": (2, lambda h: replace_version(h, "b", copies=(note("b"), note("b", extra="x"))),
                      "copies that differ"),
    "two event ids": (2, lambda h: replace_version(h, "b", copies=(note("b"), note("b", event_id="other"))),
                      "2 event ids"),
    "healthy failed": (3, lambda h: replace_version(h, "a", state="FAILED", terminal_writes=("FAILED",),
                                                    copies=(note("a", "upscale.failed", code="WORKER_CRASHED"),)),
                       "healthy k1@v-a (job a) ended FAILED WORKER_CRASHED"),
    "poison failed too early": (3, lambda h: replace_version(h, "c", poison_deaths=2, inference_deaths=2),
                                "after 2 worker deaths in its inference"),
    "poison succeeded": (3, lambda h: dataclasses.replace(
        replace_version(h, "c", state="SUCCEEDED", terminal_writes=("SUCCEEDED",), copies=(note("c"),)),
        outputs={**h.outputs, "k3": "v-c"}), "poison k3@v-c (job c): SUCCEEDED"),
    "left running": (4, lambda h: replace_version(h, "b", state="RUNNING", terminal_writes=()),
                     "k2@v-b (job b): RUNNING"),
    "no record": (4, lambda h: replace_version(h, "b", state=None, terminal_writes=()), "no job record"),
    "another record left": (4, lambda h: dataclasses.replace(h, other_records={"x": "QUEUED"}), "job x: QUEUED"),
    "older output last": (5, lambda h: dataclasses.replace(h, outputs={**h.outputs, "k4": "v-d1"}),
                          "holds version v-d1 (an older upload's), not the newest v-d2"),
    "no output": (5, lambda h: dataclasses.replace(h, outputs={**h.outputs, "k1": None}), "holds version None"),
    "inferred twice": (6, lambda h: replace_version(h, "a", inferences=2), "2 inferences, 0 kills"),
    "beyond the limit": (7, lambda h: dataclasses.replace(
        h, worker_jobs=[*h.worker_jobs, WorkerJob("w5", "2", 30.0, 40.0)]), "others were waiting or running (limit 2)"),
    "stale after reuse": (7, lambda h: dataclasses.replace(h, worker_jobs=[
        WorkerJob("w1", "0", 0.0, None), WorkerJob("w2", "0", 10.0, 15.0)]),
        "w1 still waiting or running after slot 0"),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_each_break_is_caught_by_its_invariant_alone(name: str) -> None:
    number, breaking, expected = BREAKS[name]
    verdicts = {v.number: v for v in check(breaking(clean()))}
    assert not verdicts[number].ok
    assert any(expected in text for text in verdicts[number].violations), verdicts[number].violations
    also = {2} if name == "told another outcome" else set()
    assert {n for n, v in verdicts.items() if not v.ok} == {number} | also


def test_inferences_are_allowed_one_more_per_kill_that_hit_the_job() -> None:
    assert check(replace_version(clean(), "a", inferences=3, kill_hits=2))[5].ok
    assert not check(replace_version(clean(), "a", inferences=3, kill_hits=1))[5].ok


def test_a_poison_image_fails_after_its_deaths_in_inference_whoever_killed_the_worker() -> None:
    """A kill aimed at another job that lands after the poison image's inference was marked started is a crash
    of that image as the job record counts it, though its poison did not get to kill that worker."""
    assert check(replace_version(clean(), "c", poison_deaths=2, inference_deaths=3, kill_hits=1))[2].ok
    assert not check(replace_version(clean(), "c", poison_deaths=3, inference_deaths=4))[2].ok


def test_a_worker_job_may_linger_a_moment_after_its_slot_is_reused() -> None:
    """Its worker freed the slot on its way out, or its cancellation is under way: not one too many."""
    handover = [WorkerJob("w1", "0", 0.0, 10.5), WorkerJob("w2", "0", 10.0, 20.0)]
    assert check(dataclasses.replace(clean(), worker_jobs=handover))[6].ok


def test_identical_duplicates_are_counted_not_violations() -> None:
    history = replace_version(clean(), "a", copies=(note("a"), note("a"), note("a")))
    assert all(v.ok for v in check(history)) and duplicates(history) == 2
