"""Every fault by name: what AWS does, the variants a seed picks from, and how it is armed for one upload.

Each fault mirrors a failure AWS documents (the `aws` line of each entry). Families group them for
`--faults` (e.g. `kill` arms every kill point). Errors come back as botocore's retries see them: a
throttle or a 5xx is retried by the caller's SDK (standard mode, 5 attempts), so a fault armed for 5 or
more consecutive calls reaches the code, fewer only cost it time.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from common.lifecycle import OUTBOX_LEASE_SECONDS
from local_stack.faults.injector import ActionFor, Armed, FaultInjector, Match, Upload
from local_stack.faults.operations import AwsRequest, aws_error
from local_stack.faults.proxy import Action, Delay, LoseResponse, Respond
from local_stack.faults.worker import INFERENCE_STARTED

Params = Mapping[str, str | int]
# AWS's minutes become seconds locally: the spot warning's two minutes are 120 * TIME_SCALE seconds.
TIME_SCALE = 1 / 30


@dataclass(frozen=True, slots=True)
class FaultTiming:
    spot_warning_seconds: float = 120 * TIME_SCALE
    outage_seconds: float = 15.0  # longer than the chaos runs' worker_start_grace_seconds
    slow_publish_seconds: float = OUTBOX_LEASE_SECONDS + 5  # slower than the outbox lease
    late_output_seconds: float = 90.0  # the older version's output waits at most this long for the newer one's
    slow_input_seconds: float = 5.0  # a slow input download: the worker renews the item's lease meanwhile
    clock_offset_seconds: float = 30.0
    intake_timeout_seconds: float = 20.0  # the intake function's timeout; its late answer comes after it


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    family: str
    aws: str  # the failure as AWS has it
    variants: Mapping[str, tuple[str | int, ...]]  # a seed picks one value of each
    arm: Callable[[FaultInjector, Upload, Params, FaultTiming, Armed], None]

    def draw(self, rng: random.Random) -> dict[str, str | int]:
        return {name: rng.choice(values) for name, values in sorted(self.variants.items())}


def _error(service: str, status: int, code: str, message: str) -> ActionFor:
    response = aws_error(service, status, code, message)
    return lambda target, request: Respond(response)


def _fixed(action: Action) -> ActionFor:
    return lambda target, request: action


def _ddb_error(status: int, code: str) -> Callable[[FaultInjector, Upload, Params, FaultTiming, Armed], None]:
    def arm(injector: FaultInjector, upload: Upload, p: Params, timing: FaultTiming, armed: Armed) -> None:
        process, operation, skip = str(p["call"]).split()
        injector.add_rule(armed, Match("dynamodb", operation, kind=process, upload=upload),
                          _error("dynamodb", status, code, "injected"), times=int(p["times"]), skip=int(skip))
    return arm


def _sqs_error(status: int, code: str) -> Callable[[FaultInjector, Upload, Params, FaultTiming, Armed], None]:
    """A failed call on the job's work item. A visibility change may be one entry of a batch call: an HTTP 500
    fails the whole call, an entry's own error (a stale receipt handle) fails that entry alone."""
    def arm(injector: FaultInjector, upload: Upload, p: Params, timing: FaultTiming, armed: Armed) -> None:
        operation: str | tuple[str, ...] = str(p["operation"])
        if operation == "ChangeMessageVisibility":  # a worker renews an item's lease while the item is slow
            operation = ("ChangeMessageVisibility", "ChangeMessageVisibilityBatch")
            slow = injector.arm("slow-input", upload, "(so its lease is renewed)")
            injector.add_rule(slow, Match("s3", "GetObject", upload=upload), _fixed(Delay(timing.slow_input_seconds)))
        fail = _error("sqs", status, code, "injected") if status >= 500 else injector.fail_entries(upload, code)
        injector.add_rule(armed, Match("sqs", operation, upload=upload), fail, times=int(p["times"]),
                          skip=int(p["skip"]))
    return arm


def _publish(action: Action) -> Callable[[FaultInjector, Upload, Params, FaultTiming, Armed], None]:
    def arm(injector: FaultInjector, upload: Upload, p: Params, timing: FaultTiming, armed: Armed) -> None:
        injector.add_rule(armed, Match("sns", "Publish", kind=None, upload=upload), _fixed(action))
    return arm


def _slow_publish(injector: FaultInjector, upload: Upload, p: Params, timing: FaultTiming, armed: Armed) -> None:
    injector.add_rule(armed, Match("sns", "Publish", kind=None, upload=upload),
                      _fixed(Delay(timing.slow_publish_seconds)))


def _kill_at(service: str, operation: str, *, after_forward: bool,
             where: Callable[[AwsRequest], bool] | None = None,
             ) -> Callable[[FaultInjector, Upload, Params, FaultTiming, Armed], None]:
    def arm(injector: FaultInjector, upload: Upload, p: Params, timing: FaultTiming, armed: Armed) -> None:
        injector.add_rule(armed, Match(service, operation, upload=upload, where=where),
                          injector.kill_action(armed, after_forward=after_forward), times=int(p.get("times", 1)))
    return arm


def _sets_terminal_state(request: AwsRequest) -> bool:
    return request.terminal_state is not None


def _kill_mid_inference(injector: FaultInjector, upload: Upload, p: Params, timing: FaultTiming,
                        armed: Armed) -> None:
    injector.on_log(armed, upload, INFERENCE_STARTED, lambda worker: injector.kill_worker(worker, upload.job_ids),
                    times=int(p["times"]))


def _spot_reclaim(injector: FaultInjector, upload: Upload, p: Params, timing: FaultTiming, armed: Armed) -> None:
    injector.on_log(armed, upload, INFERENCE_STARTED,
                    lambda worker: injector.reclaim(worker, upload.job_ids, timing.spot_warning_seconds))


def _no_capacity(injector: FaultInjector, upload: Upload, p: Params, timing: FaultTiming, armed: Armed) -> None:
    injector.outage(armed, timing.outage_seconds)


def _clock_skew(injector: FaultInjector, upload: Upload, p: Params, timing: FaultTiming, armed: Armed) -> None:
    injector.skew_next_worker(armed, int(p["direction"]) * timing.clock_offset_seconds)


def _duplicate_event(injector: FaultInjector, upload: Upload, p: Params, timing: FaultTiming,
                     armed: Armed) -> None:
    injector.duplicate_intake_message(armed, upload)


def _version_race(injector: FaultInjector, upload: Upload, p: Params, timing: FaultTiming, armed: Armed) -> None:
    """A newer version of the key is uploaded as the older one's inference starts (so intake cannot tell the
    older one is stale yet), and the older version's output write waits until the newer one's went through
    (or `late_output_seconds`)."""
    def output_of(version: int) -> Callable[[AwsRequest], bool]:
        def match(request: AwsRequest) -> bool:
            source = request.headers.get("x-amz-meta-source-version")
            return request.operation == "PutObject" and len(upload.versions) > version \
                and source == upload.versions[version]
        return match
    newer_written = injector.seen(output_of(1))
    newer = injector.arm("newer-version", upload, "(uploaded as the older one's inference starts)")
    injector.on_log(newer, upload, INFERENCE_STARTED, lambda worker: injector.upload_again(upload))
    injector.add_rule(armed, Match("s3", "PutObject", where=output_of(0)),
                      _fixed(Delay(timing.late_output_seconds, until=newer_written)))


def _intake_timeout(injector: FaultInjector, upload: Upload, p: Params, timing: FaultTiming,
                    armed: Armed) -> None:
    service = "sqs" if p["operation"] == "SendMessage" else "dynamodb"
    injector.add_rule(armed, Match(service, str(p["operation"]), kind="intake", upload=upload),
                      _fixed(Delay(timing.intake_timeout_seconds + 2, after_forward=True)))


_TIMES = (1, 3, 5, 8)  # 5 or more outlast botocore's 5 attempts
# Which of a job's DynamoDB calls, as "process operation how-many-to-let-through": the worker's updates are
# its claim, then (by protocol) its inference mark, lease renewals, the terminal write and the sent mark;
# intake's are its look-up, the record's creation, the QUEUED write and the sent mark.
_DDB_CALLS = ("worker UpdateItem 0", "worker UpdateItem 1", "worker UpdateItem 2", "intake GetItem 0",
              "intake PutItem 0", "intake UpdateItem 0", "intake UpdateItem 1")
FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("ddb-throttle", "ddb", "ProvisionedThroughputExceededException on a job's DynamoDB call",
          {"call": _DDB_CALLS, "times": _TIMES}, _ddb_error(400, "ProvisionedThroughputExceededException")),
    Fault("ddb-5xx", "ddb", "InternalServerError (HTTP 500) on a job's DynamoDB call",
          {"call": _DDB_CALLS, "times": _TIMES}, _ddb_error(500, "InternalServerError")),
    Fault("sqs-visibility", "sqs", "ChangeMessageVisibility fails (HTTP 500) for a job's work item",
          {"operation": ("ChangeMessageVisibility",), "times": (1, 5), "skip": (0, 1)},
          _sqs_error(500, "InternalFailure")),
    Fault("sqs-delete", "sqs", "DeleteMessage fails (HTTP 500) for a job's work item",
          {"operation": ("DeleteMessage",), "times": (1, 5), "skip": (0,)}, _sqs_error(500, "InternalFailure")),
    Fault("sqs-stale-receipt", "sqs", "ReceiptHandleIsInvalid: the receipt handle went stale",
          {"operation": ("DeleteMessage", "ChangeMessageVisibility"), "times": (1,), "skip": (0,)},
          _sqs_error(400, "ReceiptHandleIsInvalid")),
    Fault("sns-lost-response", "sns", "Publish succeeds, its response is lost (the SDK retries it)", {},
          _publish(LoseResponse())),
    Fault("sns-slow-publish", "sns", "Publish takes longer than the outbox lease", {}, _slow_publish),
    Fault("kill-download", "kill", "worker SIGKILLed mid-download (OOM killer, lost host), once or twice",
          {"times": (1, 2)}, _kill_at("s3", "GetObject", after_forward=False)),
    Fault("kill-inference", "kill", "worker SIGKILLed mid-inference, once or twice (two hosts lost)",
          {"times": (1, 2)}, _kill_mid_inference),
    Fault("kill-before-terminal", "kill", "worker SIGKILLed after its upload, before the terminal write", {},
          _kill_at("dynamodb", "UpdateItem", after_forward=False, where=_sets_terminal_state)),
    Fault("kill-before-publish", "kill", "worker SIGKILLed between the terminal write and the publish", {},
          _kill_at("sns", "Publish", after_forward=False)),
    Fault("kill-after-publish", "kill", "worker SIGKILLed after SNS took the publish, before it heard so", {},
          _kill_at("sns", "Publish", after_forward=True)),
    Fault("spot-reclaim", "spot", "EC2 Spot Instance Interruption Warning, then the instance is gone", {},
          _spot_reclaim),
    Fault("no-capacity", "capacity", "no GPU capacity for a while: Batch jobs stay RUNNABLE", {}, _no_capacity),
    Fault("clock-skew", "clock", "a worker host's clock runs 30 s ahead or behind", {"direction": (1, -1)},
          _clock_skew),
    Fault("duplicate-event", "events", "S3 -> SQS delivers the upload's event twice (at least once)", {},
          _duplicate_event),
    Fault("version-race", "events", "two versions of one key; the older one's output lands last", {},
          _version_race),
    Fault("intake-timeout", "intake", "the intake Lambda is killed at its timeout mid-record",
          {"operation": ("PutItem", "UpdateItem", "SendMessage")}, _intake_timeout),
)}
FAMILIES: dict[str, tuple[str, ...]] = {}
for _fault in FAULTS.values():
    FAMILIES[_fault.family] = (*FAMILIES.get(_fault.family, ()), _fault.name)


def resolve(spec: str) -> tuple[str, ...]:
    """`all`, or a comma-separated list of fault names and families, as fault names (ValueError if unknown)."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part == "all":
            found: tuple[str, ...] = tuple(FAULTS)
        elif part in FAMILIES:
            found = FAMILIES[part]
        elif part in FAULTS:
            found = (part,)
        else:
            raise ValueError(f"unknown fault or family {part!r}; known: all, {', '.join(sorted(FAMILIES))}, "
                             f"{', '.join(FAULTS)}")
        names.extend(n for n in found if n not in names)
    return tuple(names)


def arm(injector: FaultInjector, name: str, upload: Upload, params: Params, timing: FaultTiming) -> Armed:
    fault = FAULTS[name]
    armed = injector.arm(name, upload, ", ".join(f"{k}={v}" for k, v in params.items()))
    fault.arm(injector, upload, params, timing, armed)
    return armed
