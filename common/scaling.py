"""How many GPU workers run: worker slots that follow the work queue's depth, up to `max_workers`.

A worker slot is a small record in the jobs table (`#worker-slot/<n>`). Starting a worker means winning
a conditional write on a free slot first, so concurrent intake invocations and the scheduled scaler
never start more than `max_workers` Batch jobs together, however many uploads arrive. A slot stays
taken while its worker renews it (every heartbeat) or, before the worker starts, while Batch may still
be placing it (`worker_start_grace_seconds`); a worker that exits frees its slot, and so does the
scaler when Batch reports the job ended or the lease lapsed (the worker died). A slot reused after its
lease lapsed first has its old job terminated: a job still RUNNABLE (no GPU capacity) would otherwise wait
beside its replacement, and the jobs would pile up. On a spot interruption warning the scaler stops the
workers on that instance, so they get SIGTERM and give their images back before the instance goes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from boto3.dynamodb.conditions import Attr

from common import aws
from common.clock import server_time
from common.contract import ENV_WORKER_SLOT, ENV_WORKER_TOKEN
from common.jobs import JobStore
from common.settings import Settings
from common.work_queue import WorkQueue
from common.worker_backends import WorkerBackend, make_backend

log = logging.getLogger(__name__)

SLOT_KEY_PREFIX = "#worker-slot/"
SLOT_STARTING, SLOT_RUNNING, SLOT_FREE = "STARTING", "RUNNING", "FREE"


@dataclass(frozen=True, slots=True)
class Slot:
    number: int
    token: str
    status: str  # STARTING (submitted, waiting for a GPU) or RUNNING (the worker renews it)
    lease_until: float
    submitted_at: float
    backend_job_id: str = ""

    def live(self, now: float) -> bool:
        return self.lease_until > now


class WorkerSlots:
    """The slot records: conditional acquire, renew and free."""

    def __init__(self, store: JobStore, *, clock: Callable[[], float] = server_time) -> None:
        self._store = store
        self._clock = clock

    def acquire(self, number: int, *, grace_seconds: float) -> str | None:
        """Take slot `number` if it is free (never taken, freed, or its lease lapsed). Its token, or None."""
        now = self._clock()
        token = uuid.uuid4().hex
        free = Attr("job_id").not_exists() | Attr("lease_until").lt(round(now, 3))
        taken = self._store.put({"job_id": _key(number), "slot": number, "token": token, "status": SLOT_STARTING,
                                 "lease_until": round(now + grace_seconds, 3), "submitted_at": round(now, 3)},
                                free)
        return token if taken else None

    def note_job(self, number: int, token: str, backend_job_id: str) -> None:
        self._store.update(_key(number), {"backend_job_id": backend_job_id}, condition=Attr("token").eq(token))

    def renew(self, number: int, token: str, *, lease_seconds: float) -> bool:
        """The worker is alive: keep the slot. False: the slot is no longer this worker's."""
        return self._store.update(_key(number), {"status": SLOT_RUNNING, "lease_until": round(self._clock()
                                                                                           + lease_seconds, 3)},
                                  condition=Attr("token").eq(token))

    def free(self, number: int, token: str) -> bool:
        return self._store.update(_key(number), {"status": SLOT_FREE, "lease_until": 0},
                                  condition=Attr("token").eq(token))

    def all(self, count: int) -> list[Slot]:
        """Slots 0..count-1 that were ever taken, read in one round trip (intake asks on every upload)."""
        found = self._store.get_many([_key(number) for number in range(count)])
        return [Slot(number=number, token=str(plain.get("token", "")), status=str(plain.get("status", "")),
                     lease_until=float(plain.get("lease_until", 0)),
                     submitted_at=float(plain.get("submitted_at", 0)),
                     backend_job_id=str(plain.get("backend_job_id", "")))
                for number in range(count) if (plain := found.get(_key(number)))]


@dataclass(frozen=True, slots=True)
class ScaleResult:
    depth: int
    live: int
    started: tuple[tuple[int, str], ...] = ()  # (slot, backend job id)
    cancelled: tuple[str, ...] = ()  # backend job ids of superseded slots, terminated before reuse
    oldest_start_wait: float = 0.0  # seconds the longest-waiting submitted worker has waited for a GPU
    errors: tuple[str, ...] = field(default=())


class WorkerScaler:
    """Workers running or waiting follow the queue depth, up to max_workers."""

    def __init__(self, *, slots: WorkerSlots, queue: WorkQueue, backend: WorkerBackend, max_workers: int,
                 start_grace_seconds: float, clock: Callable[[], float] = server_time) -> None:
        self._slots = slots
        self._queue = queue
        self._backend = backend
        self._max = max(1, max_workers)
        self._grace = start_grace_seconds
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, store: JobStore) -> WorkerScaler:
        return cls(slots=WorkerSlots(store), queue=WorkQueue(sqs_client=aws.client("sqs", settings),
                                                            queue_url=settings.work_queue_url),
                   backend=make_backend(settings), max_workers=settings.max_workers,
                   start_grace_seconds=settings.worker_start_grace_seconds)

    def ensure(self, *, at_least: int = 0) -> ScaleResult:
        """Start workers for free slots until live workers cover the queue depth (at most max_workers).

        `at_least`: the caller knows of this many items (SQS's depth is approximate and can read 0 right
        after a send)."""
        depth = max(at_least, self._queue.depth())
        now = self._clock()
        existing = {s.number: s for s in self._slots.all(self._max)}
        live = [s for s in existing.values() if s.live(now)]
        waiting = [now - s.submitted_at for s in live if s.status == SLOT_STARTING]
        need = min(self._max, depth) - len(live)
        started: list[tuple[int, str]] = []
        cancelled: list[str] = []
        errors: list[str] = []
        for number in range(self._max):
            if need <= 0:
                break
            if number in existing and existing[number].live(now):
                continue
            token = self._slots.acquire(number, grace_seconds=self._grace)
            need -= 1  # taken by us or, a moment ago, by a concurrent caller: either way one more worker
            if token is None:
                continue
            previous = existing.get(number)
            if previous is not None and previous.backend_job_id and previous.status != SLOT_FREE:
                try:  # still RUNNABLE (no capacity) or a worker that stopped renewing: it must not run beside ours
                    self._backend.terminate(previous.backend_job_id,
                                            f"superseded: its worker slot {number} was given to a new job")
                    cancelled.append(previous.backend_job_id)
                except Exception as exc:
                    self._slots.free(number, token)
                    errors.append(f"slot {number}: could not end its old job: {type(exc).__name__}: {exc}")
                    log.exception("could not terminate the superseded job of slot %d", number)
                    continue
            try:
                job_id = self._backend.start(number, token)
            except Exception as exc:  # the slot is given back; the next call (or the schedule) tries again
                self._slots.free(number, token)
                errors.append(f"slot {number}: {type(exc).__name__}: {exc}")
                log.exception("could not start a worker for slot %d", number)
                continue
            started.append((number, job_id))
            try:
                self._slots.note_job(number, token, job_id)
            except Exception:
                log.warning("worker %s started but not noted on slot %d", job_id, number, exc_info=True)
        return ScaleResult(depth=depth, live=len(live) + len(started), started=tuple(started),
                           cancelled=tuple(cancelled), oldest_start_wait=max(waiting, default=0.0),
                           errors=tuple(errors))

    def stop_workers_on_instance(self, instance_id: str) -> list[str]:
        """An EC2 spot interruption warning for `instance_id`: stop the worker jobs running there now, so each
        gets SIGTERM and gives its images back within the two-minute notice. ECS spot draining stops only
        service tasks and a Batch job is a standalone task (Amazon ECS Developer Guide, "Spot Instance
        draining"), so without this the job would die with the instance. Returns the jobs stopped."""
        now = self._clock()
        jobs = [s.backend_job_id for s in self._slots.all(self._max) if s.live(now) and s.backend_job_id]
        doomed = self._backend.jobs_on_instance(instance_id, jobs) if jobs else []
        for job_id in doomed:
            self._backend.terminate(job_id, f"EC2 spot interruption warning for {instance_id}")
        return doomed

    def worker_ended(self, environment: Mapping[str, str]) -> bool:
        """Batch says a worker job ended: free its slot (if still its) so a new one can start."""
        try:
            number, token = int(environment[ENV_WORKER_SLOT]), environment[ENV_WORKER_TOKEN]
        except (KeyError, ValueError):
            return False
        return self._slots.free(number, token)



def _key(number: int) -> str:
    return f"{SLOT_KEY_PREFIX}{number}"
