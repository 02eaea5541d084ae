"""The armed faults of one run, and the local stack's hooks that let them happen.

The stack calls in (when `LocalStackConfig.faults` is set): every Lambda function and every worker job gets
an endpoint of its own on the fault proxy (`endpoint_for`, `launch`), each worker's log line is seen
(`on_worker_line`), and each batch the intake event source receives (`on_intake_messages`). The catalogue
arms faults: proxy rules (a matching request gets an error, a delay, a lost answer, or its process killed),
log triggers (a worker that logs a message about a job is killed, or its instance reclaimed), a skewed
clock for the next worker, a duplicated intake message, a capacity outage. Every fault is counted where it
is armed (`Armed`) and where it hits; kills and reclaims also count against each job they hit.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from common import aws
from local_stack.batch import LocalBatchJob, WorkerLaunch
from local_stack.batch_events import spot_interruption_warning
from local_stack.faults.operations import AwsRequest, Response, aws_error
from local_stack.faults.proxy import Action, FaultProxy, Kill, Respond, Rewrite, Target
from local_stack.faults.worker import CLOCK_OFFSET_ENV, POISON_MESSAGE
from local_stack.faults.worker_log import WorkerLogs
from local_stack.stack import ENDPOINT_ENV

if TYPE_CHECKING:
    from local_stack.stack import LocalStack

log = logging.getLogger(__name__)

WORKER_COMMAND = (sys.executable, "-m", "local_stack.faults.worker")
_JOB_ID = re.compile(r"\b[0-9a-f]{32}\b")


@dataclass
class Upload:
    """One key the run uploads (twice for a version race): what faults aim at."""

    index: int
    key: str
    killer: bool = False  # a poison image: it kills every worker that tries it
    fault: str | None = None
    size: tuple[int, int] = (32, 32)  # of its images
    versions: list[str] = field(default_factory=list)  # version ids, oldest first
    job_ids: list[str] = field(default_factory=list)  # one per version
    uploaded_at: list[float] = field(default_factory=list)


@dataclass
class Armed:
    """One fault armed for one upload (or for the stack): counted once armed, and each time it hits."""

    fault: str
    upload: Upload | None
    detail: str = ""
    hits: int = 0


@dataclass(frozen=True)
class Match:
    """Which requests a rule is for: one AWS operation, from one kind of process, about one upload."""

    service: str
    operation: str | tuple[str, ...]  # one, or any of these
    kind: str | None = "worker"  # None: any process
    upload: Upload | None = None  # None: any job
    where: Callable[[AwsRequest], bool] | None = None


@dataclass
class _Rule:
    armed: Armed
    match: Match
    action: ActionFor
    times: int
    skip: int


@dataclass
class _LogTrigger:
    armed: Armed
    message: str
    upload: Upload
    act: Callable[[str], None]  # given the worker job that logged it
    times: int


class Controls(Protocol):
    """What faults do to the stack (local_stack.stack.LocalStack via `LocalStackControls`; tests pass fakes)."""

    region: str
    capacity: int

    def kill(self, worker: str) -> bool: ...

    def instance_of(self, worker: str) -> str | None: ...

    def workers_on(self, instance: str) -> list[str]: ...

    def deliver_to_scaler(self, event: dict[str, Any]) -> None: ...

    def set_capacity(self, capacity: int) -> None: ...

    def waited_for_capacity(self, start: float, end: float) -> int: ...

    def redeliver_intake(self, body: str) -> None: ...


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proxy: FaultProxy | None = None
        self._controls: Controls | None = None
        self._rules: list[_Rule] = []
        self._triggers: list[_LogTrigger] = []
        self._skews: deque[tuple[Armed, float]] = deque()
        self._skewed: dict[str, Armed] = {}  # worker job -> its clock-skew fault
        self._duplicates: dict[str, Armed] = {}  # object key -> duplicate-event fault
        self._outages = 0
        self._known_jobs: set[str] = set()
        self._receipts: dict[str, frozenset[str]] = {}  # SQS receipt handle -> job ids of its message
        self._watches: list[tuple[Callable[[AwsRequest], bool], threading.Event]] = []
        self.armed: list[Armed] = []
        self.logs = WorkerLogs()
        self.kill_hits: Counter[str] = Counter()  # job id -> kills and reclaims that hit it
        self.terminal_writes: defaultdict[str, list[str]] = defaultdict(list)  # job id -> terminal states written
        # worker job -> the jobs whose inference it marked started and has not unmarked: if it died, each died in
        # its inference as the job record counts a crash (whatever killed it, and whether or not it logged so)
        self.inference_marked: defaultdict[str, set[str]] = defaultdict(set)
        self.journal: Callable[[str], None] = lambda text: None  # one line per fault event (the run's log)
        self.uploader: Callable[[Upload], None] | None = None  # uploads a new version of an upload's key

    # --- the stack's hooks -------------------------------------------------------------------------
    def start(self, upstream_url: str) -> None:
        self._proxy = FaultProxy(upstream_url, self)

    def bind(self, controls: Controls) -> None:
        self._controls = controls

    def endpoint_for(self, name: str, kind: str) -> str:
        """The endpoint URL of one process (a Lambda function's execution environments share it)."""
        assert self._proxy is not None, "start() first"
        return self._proxy.open(Target(name, kind))

    def launch(self, job: LocalBatchJob) -> WorkerLaunch:
        """A worker job's process: its own proxy port, and the skewed clock armed for the next worker."""
        environment = {ENDPOINT_ENV: self.endpoint_for(job.batch_job_id, "worker")}
        with self._lock:
            skew = self._skews.popleft() if self._skews else None
            if skew:
                self._skewed[job.batch_job_id] = skew[0]
        if skew:
            environment[CLOCK_OFFSET_ENV] = str(skew[1])
            self.journal(f"clock-skew: worker {job.batch_job_id[:8]} starts {skew[1]:+g} s off")
        return WorkerLaunch(environment=environment, command=WORKER_COMMAND)

    def on_worker_line(self, job: LocalBatchJob, line: str) -> None:
        parsed = self.logs.feed(job.batch_job_id, line)
        if parsed is None or parsed.job_id is None:
            return
        if parsed.message == POISON_MESSAGE:  # the worker dies with whatever else it had in hand
            self._hit(self.logs.drop(job.batch_job_id) | {parsed.job_id}, f"poison image killed worker "
                      f"{job.batch_job_id[:8]}")
            return
        with self._lock:
            due = [t for t in self._triggers if t.message == parsed.message and parsed.job_id in t.upload.job_ids]
            for trigger in due:
                trigger.times -= 1
                if trigger.times <= 0:
                    self._triggers.remove(trigger)
                trigger.armed.hits += 1
        for trigger in due:
            self.journal(f"{trigger.armed.fault}: worker {job.batch_job_id[:8]} logged {parsed.message!r} "
                         f"for job {parsed.job_id[:8]}")
            trigger.act(job.batch_job_id)

    def on_intake_messages(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """SQS delivers at least once: a message of an upload armed with duplicate-event comes again."""
        for message in messages:
            body = str(message.get("Body", ""))
            with self._lock:
                key = next((k for k in self._duplicates if k in body), None)
                armed = self._duplicates.pop(key) if key else None
            if armed is not None:
                armed.hits += 1
                self.journal(f"duplicate-event: the intake message of {key} delivered again")
                self._require_controls().redeliver_intake(body)

    @property
    def in_flight(self) -> list[str]:
        """The requests its proxy is forwarding or holding now (FaultProxy.in_flight)."""
        return self._proxy.in_flight if self._proxy else []

    def close(self) -> None:
        self._stop.set()
        if self._proxy:
            self._proxy.close()

    # --- the proxy's decider -----------------------------------------------------------------------
    def decide(self, target: Target, request: AwsRequest) -> Action | None:
        with self._lock:
            for rule in self._rules:
                if rule.times > 0 and self._matches(rule.match, target, request):
                    if rule.skip > 0:
                        rule.skip -= 1
                        continue
                    rule.times -= 1
                    rule.armed.hits += 1
                    break
            else:
                return None
        action = rule.action(target, request)
        self.journal(f"{rule.armed.fault}: {type(action).__name__} on {target.kind} {target.name[:8]} "
                     f"{request.service} {request.operation} ({rule.armed.detail or 'once'})")
        return action

    def observe(self, target: Target, request: AwsRequest, response: Response) -> None:
        if response.status != 200:
            return
        with self._lock:
            seen = [event for predicate, event in self._watches if predicate(request)]
        for event in seen:
            event.set()
        if request.service == "sqs" and request.operation == "ReceiveMessage":
            try:
                messages = json.loads(response.body or b"{}").get("Messages", [])
            except ValueError:
                return
            with self._lock:
                for message in messages:
                    self._receipts[str(message.get("ReceiptHandle"))] = frozenset(
                        j for j in _JOB_ID.findall(str(message.get("Body", ""))) if j in self._known_jobs)
            return
        if request.terminal_state is not None:
            with self._lock:
                self.terminal_writes[request.item_job_id].append(request.terminal_state)
        if target.kind == "worker" and request.inference_mark is not None:
            with self._lock:
                if request.inference_mark:
                    self.inference_marked[target.name].add(request.item_job_id)
                else:
                    self.inference_marked[target.name].discard(request.item_job_id)

    def _matches(self, match: Match, target: Target, request: AwsRequest) -> bool:
        operations = (match.operation,) if isinstance(match.operation, str) else match.operation
        if request.service != match.service or request.operation not in operations:
            return False
        if match.kind is not None and target.kind != match.kind:
            return False
        if match.where is not None and not match.where(request):
            return False
        if match.upload is None:
            return True
        # Keys are of one width (local_stack.faults.runner), so one is never part of another.
        return match.upload.key in request.text or bool(self._jobs_in(request) & set(match.upload.job_ids))

    def _jobs_in(self, request: AwsRequest) -> set[str]:
        found = {j for j in _JOB_ID.findall(request.text) if j in self._known_jobs}
        for handle in receipt_handles(request).values():
            found |= self._receipts.get(handle, frozenset())
        return found

    def fail_entries(self, upload: Upload, code: str) -> ActionFor:
        """A proxy action: the call fails with `code` for the upload's message; in a batch call (e.g.
        ChangeMessageVisibilityBatch) only its entries fail, as SQS reports them, and the others go through."""
        def action(target: Target, request: AwsRequest) -> Action:
            entries = request.json.get("Entries")
            if not isinstance(entries, list):
                return Respond(aws_error("sqs", 400, code, "injected"))
            with self._lock:
                doomed = {entry_id for entry_id, handle in receipt_handles(request).items()
                          if self._receipts.get(handle, frozenset()) & set(upload.job_ids)}
            rest = [e for e in entries if e.get("Id") not in doomed]
            failed = [{"Id": i, "SenderFault": True, "Code": code, "Message": "injected"} for i in sorted(doomed)]
            body = json.dumps({**request.json, "Entries": rest}).encode() if rest else None
            return Rewrite(body, lambda response: _with_failed(response, failed))
        return action

    # --- arming (local_stack.faults.catalogue) -------------------------------------------------------
    def register(self, upload: Upload, version: str, job_id: str) -> None:
        """An upload was made: faults aimed at its key now also know its job."""
        with self._lock:
            upload.versions.append(version)
            upload.job_ids.append(job_id)
            upload.uploaded_at.append(time.time())
            self._known_jobs.add(job_id)
        self.journal(f"uploaded {upload.key} version {version[:8]}: job {job_id[:8]}"
                     f"{' (poison)' if upload.killer else ''}")

    def arm(self, fault: str, upload: Upload | None, detail: str = "") -> Armed:
        armed = Armed(fault, upload, detail)
        with self._lock:
            self.armed.append(armed)
        self.journal(f"{fault}: armed for {upload.key if upload else 'the stack'} {detail}".rstrip())
        return armed

    def add_rule(self, armed: Armed, match: Match, action: ActionFor, *, times: int = 1,
                 skip: int = 0) -> None:
        """The next `times` requests that match (after `skip` matching ones pass) get `action`."""
        with self._lock:
            self._rules.append(_Rule(armed, match, action, times, skip))

    def on_log(self, armed: Armed, upload: Upload, message: str, act: Callable[[str], None], *,
               times: int = 1) -> None:
        """The next `times` times a worker logs `message` about the upload's job, `act(worker)`."""
        with self._lock:
            self._triggers.append(_LogTrigger(armed, message, upload, act, times))

    def upload_again(self, upload: Upload) -> None:
        """A newer version of the upload's key, now (the runner's uploader)."""
        if self.uploader is None:
            raise RuntimeError("no uploader: the runner sets one")
        self.uploader(upload)

    def seen(self, predicate: Callable[[AwsRequest], bool]) -> threading.Event:
        """An event set once a request matching `predicate` has gone through (HTTP 200)."""
        event = threading.Event()
        with self._lock:
            self._watches.append((predicate, event))
        return event

    def skew_next_worker(self, armed: Armed, offset: float) -> None:
        with self._lock:
            self._skews.append((armed, offset))

    def duplicate_intake_message(self, armed: Armed, upload: Upload) -> None:
        with self._lock:
            self._duplicates[upload.key] = armed

    def kill_action(self, armed: Armed, *, after_forward: bool) -> ActionFor:
        """A proxy action: SIGKILL the worker whose request matched."""
        def action(target: Target, request: AwsRequest) -> Action:
            return Kill(lambda: self.kill_worker(target.name, armed.upload.job_ids if armed.upload else ()),
                        after_forward=after_forward)
        return action

    def kill_worker(self, worker: str, jobs: Iterable[str] = ()) -> None:
        """SIGKILL one worker (the OOM killer, a lost host); every job it had in hand is hit."""
        hit = set(jobs) | self.logs.in_hand(worker)
        self._require_controls().kill(worker)
        self._hit(hit | self.logs.drop(worker), f"killed worker {worker[:8]}")

    def reclaim(self, worker: str, jobs: Iterable[str], warning_seconds: float) -> None:
        """EC2 reclaims the spot instance under `worker`: the warning to the scaler, then, after the notice,
        everything on the instance is killed."""
        threading.Thread(target=self._reclaim, args=(worker, set(jobs), warning_seconds), daemon=True,
                         name=f"spot-reclaim-{worker[:8]}").start()

    def outage(self, armed: Armed, seconds: float) -> None:
        """No GPU capacity for `seconds` (jobs stay RUNNABLE), then the configured capacity again."""
        threading.Thread(target=self._outage, args=(armed, seconds), daemon=True, name="capacity-outage").start()

    # --- results ---------------------------------------------------------------------------------
    def finalize(self) -> None:
        """Count the hits only known after the run: a skewed worker hit if it claimed any job."""
        with self._lock:
            skewed = dict(self._skewed)
        for worker, armed in skewed.items():
            armed.hits = 1 if self.logs.claims(worker) else 0

    def disarm(self) -> None:
        with self._lock:
            self._rules.clear()
            self._triggers.clear()
            self._skews.clear()
            self._duplicates.clear()
            watches, self._watches = self._watches, []
        for _, event in watches:  # nothing stays held
            event.set()

    # --- internals -------------------------------------------------------------------------------
    def _require_controls(self) -> Controls:
        if self._controls is None:
            raise RuntimeError("the fault injector is not bound to a stack")
        return self._controls

    def _hit(self, jobs: Iterable[str], what: str) -> None:
        hit = set(jobs)
        with self._lock:
            self.kill_hits.update(hit)
        self.journal(f"{what}; it hit job(s) {', '.join(sorted(j[:8] for j in hit)) or 'none'}")

    def _reclaim(self, worker: str, jobs: set[str], warning_seconds: float) -> None:
        controls = self._require_controls()
        instance = controls.instance_of(worker)
        if instance is None:
            return
        deadline = time.monotonic() + warning_seconds
        hit = jobs | self.logs.in_hand(worker)
        self.journal(f"spot-reclaim: interruption warning for {instance} (worker {worker[:8]})")
        try:
            controls.deliver_to_scaler(spot_interruption_warning(instance_id=instance, region=controls.region))
        except Exception:  # EventBridge gave up on the target: the instance is reclaimed all the same
            log.warning("spot reclaim: the scaler did not take the warning", exc_info=True)
        if self._stop.wait(max(0.0, deadline - time.monotonic())):
            return
        for victim in controls.workers_on(instance):
            hit |= self.logs.in_hand(victim)
            controls.kill(victim)
            hit |= self.logs.drop(victim)
        self._hit(hit, f"spot-reclaim: instance {instance} gone")

    def _outage(self, armed: Armed, seconds: float) -> None:
        controls = self._require_controls()
        start = time.time()
        with self._lock:
            self._outages += 1
        controls.set_capacity(0)
        self.journal(f"no-capacity: no GPUs for {seconds:g} s")
        self._stop.wait(seconds)
        with self._lock:
            self._outages -= 1
            last = self._outages == 0
        if last:
            controls.set_capacity(controls.capacity)
            self.journal("no-capacity: GPUs back")
        if controls.waited_for_capacity(start, time.time()):
            armed.hits += 1


ActionFor = Callable[[Target, AwsRequest], Action]  # what a matching request gets, made for it


def receipt_handles(request: AwsRequest) -> dict[str, str]:
    """The SQS receipt handles a request names, by batch entry id ("" for a single call)."""
    handle = request.json.get("ReceiptHandle") or request.form.get("ReceiptHandle")
    found = {"": str(handle)} if handle else {}
    for entry in request.json.get("Entries") or []:
        if isinstance(entry, dict) and entry.get("ReceiptHandle"):
            found[str(entry.get("Id"))] = str(entry["ReceiptHandle"])
    return found


def _with_failed(response: Response | None, failed: list[dict[str, Any]]) -> Response:
    """A batch call's answer with `failed` entries added (AWS's answer for the others, if any were sent)."""
    answer: dict[str, Any] = {"Successful": [], "Failed": []}
    if response is not None and response.status == 200:
        answer = {**answer, **json.loads(response.body or b"{}")}
    elif response is not None:
        return response
    answer["Failed"] = [*answer.get("Failed", []), *failed]
    return Response(200, json.dumps(answer).encode(), (("Content-Type", "application/x-amz-json-1.0"),))


class LocalStackControls:
    """`Controls` over a running LocalStack."""

    def __init__(self, stack: LocalStack) -> None:
        assert stack.batch is not None and stack.settings is not None and stack.resources is not None
        self._stack = stack
        self._batch = stack.batch
        self.region = stack.settings.region
        self.capacity = stack.config.workers
        self._intake_queue_url = stack.resources.intake_queue_url

    def kill(self, worker: str) -> bool:
        job = self._batch.jobs.get(worker)
        return job is not None and self._batch.signal(job, signal.SIGKILL)

    def instance_of(self, worker: str) -> str | None:
        job = self._batch.jobs.get(worker)
        return job.instance_id if job else None

    def workers_on(self, instance: str) -> list[str]:
        return [j.batch_job_id for j in self._batch.running() if j.instance_id == instance]

    def deliver_to_scaler(self, event: dict[str, Any]) -> None:
        self._stack.deliver_to_scaler(event)

    def set_capacity(self, capacity: int) -> None:
        self._batch.set_capacity(capacity)

    def waited_for_capacity(self, start: float, end: float) -> int:
        """Jobs that were RUNNABLE at some moment between `start` and `end`."""
        return sum(1 for j in list(self._batch.jobs.values())
                   if j.created_at < end and (j.started_at is None or j.started_at > start)
                   and (j.stopped_at is None or j.stopped_at > start))

    def redeliver_intake(self, body: str) -> None:
        assert self._stack.settings is not None
        aws.client("sqs", self._stack.settings).send_message(QueueUrl=self._intake_queue_url, MessageBody=body)
