"""The injector's decisions without a stack: rules (skip, times, by key, by job, by receipt handle), what a kill
or a poison death hits, log triggers, duplicated intake messages, skewed workers and capacity outages."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from local_stack.batch import LocalBatchJob
from local_stack.faults.catalogue import FaultTiming, arm
from local_stack.faults.injector import FaultInjector, Match, Upload
from local_stack.faults.operations import AwsRequest, Response, aws_error
from local_stack.faults.proxy import Delay, Kill, LoseResponse, Respond, Target
from local_stack.faults.worker import CLOCK_OFFSET_ENV, POISON_MESSAGE

JOB = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
WORKER = Target("batch-1", "worker")
INTAKE = Target("upscaler-intake", "intake")
KEY = "uploads/chaos-1/00003.png"


@dataclass
class FakeControls:
    region: str = "us-east-1"
    capacity: int = 2
    killed: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    capacities: list[int] = field(default_factory=list)
    redelivered: list[str] = field(default_factory=list)

    def kill(self, worker: str) -> bool:
        self.killed.append(worker)
        return True

    def instance_of(self, worker: str) -> str | None:
        return f"i-{worker}"

    def workers_on(self, instance: str) -> list[str]:
        return [instance.removeprefix("i-")]

    def deliver_to_scaler(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def set_capacity(self, capacity: int) -> None:
        self.capacities.append(capacity)

    def waited_for_capacity(self, start: float, end: float) -> int:
        return 1

    def redeliver_intake(self, body: str) -> None:
        self.redelivered.append(body)


def ddb(operation: str, body: dict[str, Any]) -> AwsRequest:
    return AwsRequest("POST", "/", "", {"x-amz-target": f"DynamoDB_20120810.{operation}",
                                        "content-type": "application/x-amz-json-1.0"}, json.dumps(body).encode())


def sqs(operation: str, body: dict[str, Any]) -> AwsRequest:
    return AwsRequest("POST", "/", "", {"x-amz-target": f"AmazonSQS.{operation}",
                                        "content-type": "application/x-amz-json-1.0"}, json.dumps(body).encode())


def claim(job: str = JOB) -> AwsRequest:
    return ddb("UpdateItem", {"Key": {"job_id": {"S": job}}, "UpdateExpression": "SET #s0 = :s0",
                              "ExpressionAttributeNames": {"#s0": "state"},
                              "ExpressionAttributeValues": {":s0": {"S": "RUNNING"}}})


def finish(job: str = JOB, state: str = "SUCCEEDED") -> AwsRequest:
    return ddb("UpdateItem", {"Key": {"job_id": {"S": job}}, "UpdateExpression": "SET #s1 = :s1, #s0 = :s0",
                              "ExpressionAttributeNames": {"#s0": "state", "#s1": "updated_at"},
                              "ExpressionAttributeValues": {":s0": {"S": state}, ":s1": {"S": "now"}}})


def line(message: str, job: str | None = JOB) -> str:
    return json.dumps({"level": "INFO", "message": message, **({"job_id": job} if job else {})})


def made(batch_job_id: str = "batch-1") -> LocalBatchJob:
    return LocalBatchJob(batch_job_id=batch_job_id, job_name="w", environment={}, created_at=0.0)


def injector_with(upload: Upload | None = None) -> tuple[FaultInjector, FakeControls, Upload]:
    injector, controls = FaultInjector(), FakeControls()
    injector.bind(controls)
    upload = upload or Upload(3, KEY)
    injector.register(upload, "v1", JOB)
    return injector, controls, upload


def test_a_rule_lets_skip_matches_pass_then_fires_times_then_is_spent() -> None:
    injector, _, upload = injector_with()
    armed = injector.arm("ddb-throttle", upload)
    error = aws_error("dynamodb", 400, "ProvisionedThroughputExceededException", "slow down")
    injector.add_rule(armed, Match("dynamodb", "UpdateItem", upload=upload), lambda t, r: Respond(error), times=2,
                      skip=1)
    assert injector.decide(WORKER, claim(OTHER)) is None  # another job
    assert injector.decide(INTAKE, claim()) is None  # not a worker
    assert injector.decide(WORKER, claim()) is None  # skipped
    assert injector.decide(WORKER, claim()) == Respond(error)
    assert injector.decide(WORKER, finish()) == Respond(error)
    assert injector.decide(WORKER, claim()) is None  # spent
    assert armed.hits == 2


def test_a_request_is_about_an_upload_by_key_job_id_or_the_receipt_handle_of_its_message() -> None:
    injector, _, upload = injector_with()
    injector.add_rule(injector.arm("x", upload), Match("sqs", "DeleteMessage", upload=upload),
                      lambda t, r: LoseResponse(), times=5)
    delete = sqs("DeleteMessage", {"QueueUrl": "q", "ReceiptHandle": "rh-1"})
    assert injector.decide(WORKER, delete) is None  # an unknown receipt handle
    work_item = json.dumps({"job_id": JOB, "input_key": KEY})
    injector.observe(WORKER, sqs("ReceiveMessage", {"QueueUrl": "q"}),
                     Response(200, json.dumps({"Messages": [{"ReceiptHandle": "rh-1", "Body": work_item}]}).encode()))
    assert injector.decide(WORKER, delete) == LoseResponse()
    send = sqs("SendMessage", {"MessageBody": work_item})
    injector.add_rule(injector.arm("y", upload), Match("sqs", "SendMessage", kind="intake", upload=upload),
                      lambda t, r: Delay(1.0, after_forward=True))
    assert injector.decide(INTAKE, send) == Delay(1.0, after_forward=True)  # by the key in the item


def test_terminal_writes_that_took_effect_are_recorded_per_job() -> None:
    injector, _, _ = injector_with()
    injector.observe(WORKER, claim(), Response(200, b"{}"))
    injector.observe(WORKER, finish(state="FAILED"), Response(400, b"{}"))  # condition failed: no effect
    injector.observe(WORKER, finish(), Response(200, b"{}"))
    assert dict(injector.terminal_writes) == {JOB: ["SUCCEEDED"]}


def test_each_worker_s_inference_marks_that_took_effect_are_kept_until_cleared() -> None:
    injector, _, _ = injector_with()
    mark = ddb("UpdateItem", {"Key": {"job_id": {"S": JOB}}, "UpdateExpression": "SET #s0 = :s0",
                              "ExpressionAttributeNames": {"#s0": "inference_token"},
                              "ExpressionAttributeValues": {":s0": {"S": "t"}}})
    injector.observe(WORKER, mark, Response(200, b"{}"))
    injector.observe(Target("batch-2", "worker"), ddb("UpdateItem", {**mark.json, "Key": {"job_id": {"S": OTHER}}}),
                     Response(400, b"{}"))  # its claim was lost: no mark
    assert dict(injector.inference_marked) == {"batch-1": {JOB}}
    clear = ddb("UpdateItem", {"Key": {"job_id": {"S": JOB}}, "UpdateExpression": "REMOVE #r0",
                               "ExpressionAttributeNames": {"#r0": "inference_token"}})
    injector.observe(WORKER, clear, Response(200, b"{}"))
    assert injector.inference_marked["batch-1"] == set()


def test_a_kill_at_a_request_kills_that_worker_and_hits_what_it_had_in_hand() -> None:
    injector, controls, upload = injector_with()
    arm(injector, "kill-before-terminal", upload, {}, FaultTiming())
    injector.on_worker_line(made(), line("job claimed", OTHER))  # pipelined: another job in hand too
    action = injector.decide(WORKER, finish())
    assert isinstance(action, Kill) and not action.after_forward
    action.kill()
    assert controls.killed == ["batch-1"]
    assert injector.kill_hits == {JOB: 1, OTHER: 1}
    assert injector.decide(WORKER, finish()) is None  # once


def test_a_poison_death_hits_the_jobs_its_worker_had_in_hand() -> None:
    injector, controls, _ = injector_with()
    injector.on_worker_line(made(), line("job claimed"))
    injector.on_worker_line(made(), line("inference started"))
    injector.on_worker_line(made(), line(POISON_MESSAGE, OTHER))
    assert injector.logs.poison_deaths == {OTHER: 1} and injector.logs.inferences == {JOB: 1}
    assert injector.kill_hits == {JOB: 1, OTHER: 1} and controls.killed == []  # it killed itself


def test_a_finished_job_is_no_longer_in_hand() -> None:
    injector, controls, _ = injector_with()
    injector.on_worker_line(made(), line("job claimed"))
    injector.on_worker_line(made(), line("job succeeded"))
    injector.kill_worker("batch-1")
    assert controls.killed == ["batch-1"] and not injector.kill_hits


@pytest.mark.parametrize("times", [1, 2])
def test_kill_mid_inference_fires_on_the_jobs_inference_lines_as_often_as_armed(times: int) -> None:
    injector, controls, upload = injector_with()
    armed = arm(injector, "kill-inference", upload, {"times": times}, FaultTiming())
    injector.on_worker_line(made("batch-2"), line("inference started", OTHER))
    for worker in ("batch-1", "batch-3", "batch-4"):
        injector.on_worker_line(made(worker), line("inference started"))
    assert controls.killed == ["batch-1", "batch-3"][:times] and armed.hits == times
    assert injector.kill_hits == {JOB: times}


def test_a_spot_reclaim_warns_the_scaler_then_kills_the_instance_after_the_notice() -> None:
    injector, controls, upload = injector_with()
    arm(injector, "spot-reclaim", upload, {}, FaultTiming(spot_warning_seconds=0.0))
    injector.on_worker_line(made(), line("job claimed"))
    injector.on_worker_line(made(), line("inference started"))
    deadline = time.monotonic() + 30  # the reclaim runs on its own thread
    while not controls.killed and time.monotonic() < deadline:
        time.sleep(0.01)
    (warning,) = controls.events
    assert warning["source"] == "aws.ec2" and warning["detail-type"] == "EC2 Spot Instance Interruption Warning"
    assert warning["detail"] == {"instance-id": "i-batch-1", "instance-action": "terminate"}
    assert controls.killed == ["batch-1"] and injector.kill_hits == {JOB: 1}


def test_duplicate_event_sends_the_uploads_intake_message_once_more() -> None:
    injector, controls, upload = injector_with()
    armed = arm(injector, "duplicate-event", upload, {}, FaultTiming())
    body = json.dumps({"Records": [{"s3": {"object": {"key": KEY}}}]})
    injector.on_intake_messages([{"Body": json.dumps({"Records": [{"s3": {"object": {"key": "x"}}}]})}])
    injector.on_intake_messages([{"Body": body}])
    injector.on_intake_messages([{"Body": body}])  # the copy itself is not copied again
    assert controls.redelivered == [body] and armed.hits == 1


def test_the_next_worker_after_a_clock_skew_gets_the_offset_and_its_own_endpoint() -> None:
    injector, _, upload = injector_with()
    injector.start("http://127.0.0.1:1")
    try:
        plain = injector.launch(made("batch-0"))
        armed = arm(injector, "clock-skew", upload, {"direction": -1}, FaultTiming())
        skewed, after = injector.launch(made("batch-1")), injector.launch(made("batch-2"))
        assert CLOCK_OFFSET_ENV not in plain.environment and CLOCK_OFFSET_ENV not in after.environment
        assert skewed.environment[CLOCK_OFFSET_ENV] == "-30.0"
        endpoints = {w.environment["UPSCALER_ENDPOINT_URL"] for w in (plain, skewed, after)}
        assert len(endpoints) == 3 and skewed.command and skewed.command[-1] == "local_stack.faults.worker"
        injector.finalize()
        assert armed.hits == 0  # it never claimed anything
        injector.on_worker_line(made("batch-1"), line("job claimed"))
        injector.finalize()
        assert armed.hits == 1
    finally:
        injector.close()


def test_an_outage_takes_all_capacity_then_gives_it_back() -> None:
    injector, controls, upload = injector_with()
    armed = injector.arm("no-capacity", upload)
    injector._outage(armed, 0.0)  # the thread's body, run here
    assert controls.capacities == [0, 2] and armed.hits == 1


def put_output(version: str) -> AwsRequest:
    return AwsRequest("PUT", "/upscaler-output/outputs/chaos-1/00003.png", "",
                      {"authorization": "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/s3/aws4_request",
                       "x-amz-meta-source-version": version}, b"png")


def test_a_version_race_uploads_a_newer_version_as_inference_starts_and_holds_the_older_output() -> None:
    injector, _, upload = injector_with()
    armed = arm(injector, "version-race", upload, {}, FaultTiming(late_output_seconds=30))
    injector.uploader = lambda u: injector.register(u, "v2", OTHER)
    injector.on_worker_line(made(), line("inference started"))
    assert upload.versions == ["v1", "v2"]
    held = injector.decide(WORKER, put_output("v1"))
    assert isinstance(held, Delay) and held.until is not None and not held.until.is_set()
    assert injector.decide(WORKER, put_output("v2")) is None and armed.hits == 1
    injector.observe(WORKER, put_output("v2"), Response(200, b""))
    assert held.until.is_set()
