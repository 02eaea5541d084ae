"""The promise, checked on the history of one run: seven invariants, each with what it checked and every
violation. Pure: the runner collects a `History` from the stack; tests hand-make histories that break each.

1. every upload version ends in exactly one terminal state (one terminal write took effect, and every
   notification says that state);
2. every version's client hears of it at least once, and all copies for a version are identical with
   one event id;
3. no healthy image ends FAILED (or REJECTED); a poison image ends FAILED after exactly `max_attempts`
   workers died in its inference (its inference marked started on the job record, as the protocol counts a
   crash: its poison killed them, or a fault aimed elsewhere did first);
4. no job is left non-terminal once the run settled;
5. `outputs/<key>`'s latest version is the result of the newest upload of the key;
6. GPU inferences of a job <= 1 + the kills and reclaims that hit it;
7. never more worker jobs submitted and not ended than `max_workers`, and none still waiting or running
   after its slot was given to another.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from common.contract import TERMINAL_EVENTS, TERMINAL_STATES, JobState

# A worker job may take this long to vanish after its slot is reused (it freed the slot on its way out, or
# its cancellation is under way) before it counts as one too many.
HANDOVER_SECONDS = 1.0
_TERMINAL = frozenset(str(s) for s in TERMINAL_STATES)
_BAD_ENDS_FOR_HEALTHY = frozenset({str(JobState.FAILED), str(JobState.REJECTED)})


@dataclass(frozen=True, slots=True)
class Copy:
    """One notification as the webhook receiver got it."""

    event_id: str  # in the body
    attribute_event_id: str | None  # the SNS message attribute
    event_type: str
    message: str  # the SNS Message, verbatim
    received_at: float


@dataclass(frozen=True, slots=True)
class VersionOutcome:
    key: str
    version: str
    job_id: str
    newest: bool  # the last upload of its key
    killer: bool  # a poison image
    state: str | None  # the job record's state (None: no record)
    copies: tuple[Copy, ...] = ()
    terminal_writes: tuple[str, ...] = ()  # terminal states written with effect (seen at the fault proxy)
    inferences: int = 0
    kill_hits: int = 0
    poison_deaths: int = 0  # workers its poison image killed
    inference_deaths: int = 0  # workers that died with its inference marked started (by its poison or not)


@dataclass(frozen=True, slots=True)
class WorkerJob:
    job_id: str
    slot: str | None
    created_at: float
    ended_at: float | None  # stopped, cancelled, or announced its exit (after freeing its slot); None: still on


@dataclass(frozen=True)
class History:
    versions: Sequence[VersionOutcome]
    outputs: Mapping[str, str | None]  # key -> `source-version` of outputs/<key>'s latest version (None: none)
    worker_jobs: Sequence[WorkerJob]
    max_attempts: int
    max_workers: int
    other_records: Mapping[str, str] = field(default_factory=dict)  # job id -> state, of jobs no upload made


@dataclass(frozen=True, slots=True)
class Verdict:
    number: int
    statement: str
    checked: int
    violations: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.violations


def check(history: History) -> list[Verdict]:
    return [exactly_one_terminal_state(history), identical_notifications(history), healthy_never_failed(history),
            nothing_left_unfinished(history), newest_upload_owns_output(history),
            inferences_bounded_by_kills(history), workers_within_limit(history)]


def exactly_one_terminal_state(history: History) -> Verdict:
    bad = []
    decided = [v for v in history.versions if v.state in _TERMINAL]
    for v in decided:
        if len(v.terminal_writes) > 1:
            writes = ", ".join(v.terminal_writes)
            bad.append(f"{_name(v)}: {len(v.terminal_writes)} terminal writes took effect ({writes})")
        expected = str(TERMINAL_EVENTS[JobState(str(v.state))])
        said = sorted({c.event_type for c in v.copies} - {expected})
        if said:
            bad.append(f"{_name(v)} is {v.state} but its client was also told {', '.join(said)}")
    return Verdict(1, "every upload version ends in exactly one terminal state", len(decided), tuple(bad))


def identical_notifications(history: History) -> Verdict:
    bad = []
    for v in history.versions:
        if not v.copies:
            bad.append(f"{_name(v)} ({v.state}): no notification")
            continue
        first = v.copies[0]
        if any(c.message != first.message for c in v.copies):
            bad.append(f"{_name(v)}: {len(v.copies)} copies that differ")
        ids = {c.event_id for c in v.copies} | {c.attribute_event_id or c.event_id for c in v.copies}
        if len(ids) > 1:
            bad.append(f"{_name(v)}: copies with {len(ids)} event ids")
    return Verdict(2, "every version's client hears of it, every copy identical with one event_id",
                   len(history.versions), tuple(bad))


def healthy_never_failed(history: History) -> Verdict:
    bad = []
    for v in history.versions:
        if v.killer:
            if v.state != str(JobState.FAILED) or v.inference_deaths != history.max_attempts:
                bad.append(f"poison {_name(v)}: {v.state} after {v.inference_deaths} worker deaths in its "
                           f"inference, {v.poison_deaths} by its poison (expected FAILED after "
                           f"{history.max_attempts})")
        elif v.state in _BAD_ENDS_FOR_HEALTHY:
            error = next((c.message for c in v.copies), "")
            bad.append(f"healthy {_name(v)} ended {v.state} {_error_code(error)}".rstrip())
    return Verdict(3, "no healthy image ends FAILED; a poison image fails after exactly max_attempts deaths",
                   len(history.versions), tuple(bad))


def nothing_left_unfinished(history: History) -> Verdict:
    bad = [f"{_name(v)}: {v.state or 'no job record'}" for v in history.versions if v.state not in _TERMINAL]
    bad += [f"job {job_id}: {state}" for job_id, state in sorted(history.other_records.items())
            if state not in _TERMINAL]
    return Verdict(4, "no job non-terminal after the run settled", len(history.versions) + len(history.other_records),
                   tuple(bad))


def newest_upload_owns_output(history: History) -> Verdict:
    bad = []
    newest = [v for v in history.versions if v.newest and v.state == str(JobState.SUCCEEDED)]
    for v in newest:
        source = history.outputs.get(v.key)
        if source != v.version:
            older = " (an older upload's)" if source else ""
            bad.append(f"outputs/ of {v.key} holds version {source}{older}, not the newest {v.version}")
    return Verdict(5, "outputs/<key> holds the result of the newest upload of the key", len(newest), tuple(bad))


def inferences_bounded_by_kills(history: History) -> Verdict:
    bad = [f"{_name(v)}: {v.inferences} inferences, {v.kill_hits} kills/reclaims hit it"
           for v in history.versions if v.inferences > 1 + v.kill_hits]
    return Verdict(6, "GPU inferences per job <= 1 + kills/reclaims that hit it", len(history.versions), tuple(bad))


def workers_within_limit(history: History) -> Verdict:
    jobs = sorted(history.worker_jobs, key=lambda j: j.created_at)
    bad = []
    for job in jobs:
        on = [j for j in jobs if j.created_at <= job.created_at and _outlives(j, job.created_at)]
        if len(on) > history.max_workers:
            bad.append(f"worker job {job.job_id[:8]} submitted while {len(on) - 1} others were waiting or "
                       f"running (limit {history.max_workers})")
    for old, new in _pairs(jobs):
        if old.slot is not None and old.slot == new.slot and _outlives(old, new.created_at):
            bad.append(f"worker job {old.job_id[:8]} still waiting or running after slot {old.slot} went to "
                       f"{new.job_id[:8]}")
    return Verdict(7, "worker jobs never beyond the limit, none left after its slot was reused", len(jobs),
                   tuple(bad))


def duplicates(history: History) -> int:
    """Notification copies beyond the first, over every version."""
    return sum(max(0, len(v.copies) - 1) for v in history.versions)


def _outlives(job: WorkerJob, moment: float) -> bool:
    return job.ended_at is None or job.ended_at > moment + HANDOVER_SECONDS


def _pairs(jobs: Sequence[WorkerJob]) -> Iterable[tuple[WorkerJob, WorkerJob]]:
    for i, old in enumerate(jobs):
        for new in jobs[i + 1:]:
            yield old, new


def _name(v: VersionOutcome) -> str:
    return f"{v.key}@{v.version[:8]} (job {v.job_id[:8]})"


def _error_code(message: str) -> str:
    try:
        error = json.loads(message).get("error") or {}
    except (ValueError, AttributeError):
        return ""
    return str(error.get("code") or "")
