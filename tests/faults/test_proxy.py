"""The fault proxy in front of the emulator, driven by real boto3 clients: which operation each request is,
the terminal writes it sees, and each action as the caller's SDK (with its retries) experiences it."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from common.jobs import JobStore, table_definition
from common.lifecycle import CLAIM_TOKEN, CLAIM_UNTIL, INFERENCE_TOKEN
from local_stack.emulator import MotoServer
from local_stack.faults.catalogue import FaultTiming, arm
from local_stack.faults.injector import FaultInjector, Upload
from local_stack.faults.operations import AwsRequest, Response, aws_error
from local_stack.faults.proxy import Action, Delay, FaultProxy, Kill, LoseResponse, Respond, Target

REGION = "us-east-1"


class Script:
    """A decider that records every request and answers from a script of actions per operation."""

    def __init__(self) -> None:
        self.seen: list[AwsRequest] = []
        self.observed: list[tuple[str, int]] = []
        self.actions: dict[str, list[Action]] = {}
        self.lock = threading.Lock()

    def decide(self, target: Target, request: AwsRequest) -> Action | None:
        with self.lock:
            self.seen.append(request)
            queue = self.actions.get(request.operation)
            return queue.pop(0) if queue else None

    def observe(self, target: Target, request: AwsRequest, response: Response) -> None:
        with self.lock:
            self.observed.append((request.operation, response.status))

    def ops(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(r.service, r.operation) for r in self.seen]


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = MotoServer()
    server.start()
    yield server.endpoint_url
    server.stop()


@pytest.fixture
def proxied(upstream: str) -> Iterator[tuple[Script, str]]:
    script = Script()
    proxy = FaultProxy(upstream, script)
    yield script, proxy.open(Target("test", "worker"))
    proxy.close()


def client(service: str, url: str, **config: Any) -> Any:
    return boto3.session.Session().client(service, region_name=REGION, endpoint_url=url,
                                          aws_access_key_id="local", aws_secret_access_key="local",
                                          config=Config(**config))


def test_every_operation_is_named_as_boto3_names_it(proxied: tuple[Script, str]) -> None:
    script, url = proxied
    s3, ddb, sqs, sns = (client(s, url) for s in ("s3", "dynamodb", "sqs", "sns"))
    bucket = f"b-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="uploads/a b.png", Body=b"12345")
    assert s3.head_object(Bucket=bucket, Key="uploads/a b.png")["ContentLength"] == 5  # HEAD keeps its length
    assert s3.get_object(Bucket=bucket, Key="uploads/a b.png")["Body"].read() == b"12345"
    s3.copy_object(Bucket=bucket, Key="rejected/a.png", CopySource={"Bucket": bucket, "Key": "uploads/a b.png"})
    s3.list_object_versions(Bucket=bucket)
    s3.delete_object(Bucket=bucket, Key="rejected/a.png")
    with urllib.request.urlopen(s3.generate_presigned_url("get_object", Params={"Bucket": bucket,
                                                                               "Key": "uploads/a b.png"})) as got:
        assert got.read() == b"12345"
    table = f"t-{uuid.uuid4().hex[:8]}"
    ddb.create_table(**table_definition(table))
    ddb.put_item(TableName=table, Item={"job_id": {"S": "j"}, "state": {"S": "QUEUED"}})
    ddb.get_item(TableName=table, Key={"job_id": {"S": "j"}})
    queue = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="m")
    (message,) = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=5)
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    topic = sns.create_topic(Name=f"n-{uuid.uuid4().hex[:8]}")["TopicArn"]
    sns.publish(TopicArn=topic, Message="hello")
    assert script.ops() == [
        ("s3", "CreateBucket"), ("s3", "PutBucketVersioning"), ("s3", "PutObject"), ("s3", "HeadObject"),
        ("s3", "GetObject"), ("s3", "CopyObject"), ("s3", "ListObjectVersions"), ("s3", "DeleteObject"),
        ("s3", "GetObject"), ("dynamodb", "CreateTable"), ("dynamodb", "PutItem"), ("dynamodb", "GetItem"),
        ("sqs", "CreateQueue"), ("sqs", "SendMessage"), ("sqs", "ReceiveMessage"), ("sqs", "ChangeMessageVisibility"),
        ("sqs", "DeleteMessage"), ("sns", "CreateTopic"), ("sns", "Publish")]
    assert script.seen[2].bucket_and_key == (bucket, "uploads/a b.png")
    assert "hello" in script.seen[-1].text and all(status < 300 for _, status in script.observed)


def test_the_terminal_state_and_inference_mark_a_job_store_write_sets_are_seen(proxied: tuple[Script, str]) -> None:
    script, url = proxied
    table = f"t-{uuid.uuid4().hex[:8]}"
    ddb = client("dynamodb", url)
    ddb.create_table(**table_definition(table))
    store = JobStore(dynamodb_client=ddb, table_name=table)
    assert store.create(job_id="j1", dedupe="d", input_bucket="b", input_key="k")
    store.update("j1", {"state": "RUNNING", CLAIM_TOKEN: "t", CLAIM_UNTIL: 5})
    store.update("j1", {INFERENCE_TOKEN: "t"})
    store.update("j1", {}, remove=(INFERENCE_TOKEN,))
    store.update("j1", {"updated_at": "now", "state": "SUCCEEDED", "notification": "{}"},
                 remove=(CLAIM_TOKEN, CLAIM_UNTIL, INFERENCE_TOKEN))
    writes = script.seen[1:]
    assert [r.terminal_state for r in writes] == [None, None, None, None, "SUCCEEDED"]
    assert [r.inference_mark for r in writes] == [None, None, True, False, False]
    assert {r.item_job_id for r in writes} == {"j1"}


@pytest.mark.parametrize(("service", "status", "code"), [
    ("dynamodb", 400, "ProvisionedThroughputExceededException"), ("dynamodb", 500, "InternalServerError"),
    ("sqs", 400, "ReceiptHandleIsInvalid"), ("sqs", 500, "InternalFailure"), ("sns", 500, "InternalError"),
    ("s3", 503, "SlowDown")])
def test_injected_errors_reach_the_caller_as_aws_sends_them(proxied: tuple[Script, str], service: str, status: int,
                                                            code: str) -> None:
    script, url = proxied
    operation, call = {
        "dynamodb": ("GetItem", lambda c: c.get_item(TableName="t", Key={"job_id": {"S": "j"}})),
        "sqs": ("DeleteMessage", lambda c: c.delete_message(QueueUrl=f"{url}/000000000000/q", ReceiptHandle="r")),
        "sns": ("Publish", lambda c: c.publish(TopicArn="arn:aws:sns:us-east-1:000000000000:t", Message="m")),
        "s3": ("GetObject", lambda c: c.get_object(Bucket="b", Key="k")),
    }[service]
    script.actions[operation] = [Respond(aws_error(service, status, code, "injected"))]
    with pytest.raises(ClientError) as caught:
        call(client(service, url, retries={"total_max_attempts": 1}))
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_a_throttle_shorter_than_the_sdks_retries_only_costs_time(proxied: tuple[Script, str]) -> None:
    script, url = proxied
    ddb = client("dynamodb", url, retries={"mode": "standard", "max_attempts": 5})
    table = f"t-{uuid.uuid4().hex[:8]}"
    ddb.create_table(**table_definition(table))
    throttle = Respond(aws_error("dynamodb", 400, "ProvisionedThroughputExceededException", "slow down"))
    script.actions["GetItem"] = [throttle, throttle]
    assert "Item" not in ddb.get_item(TableName=table, Key={"job_id": {"S": "missing"}})
    assert script.ops().count(("dynamodb", "GetItem")) == 3


def test_a_lost_publish_response_makes_the_sdk_publish_twice(proxied: tuple[Script, str]) -> None:
    """The ambiguous publish: SNS took it, the answer never came, botocore's retry publishes it again."""
    script, url = proxied
    sns, sqs = client("sns", url, retries={"mode": "standard", "max_attempts": 5}), client("sqs", url)
    topic = sns.create_topic(Name=f"n-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queue = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    script.actions["Publish"] = [LoseResponse()]
    sns.publish(TopicArn=topic, Message=json.dumps({"n": 1}))
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                                     WaitTimeSeconds=1).get("Messages", [])]
    assert bodies == [json.dumps({"n": 1})] * 2


def test_a_late_answer_times_the_caller_out_after_the_write_took_effect(proxied: tuple[Script, str]) -> None:
    script, url = proxied
    ddb = client("dynamodb", url)
    table = f"t-{uuid.uuid4().hex[:8]}"
    ddb.create_table(**table_definition(table))
    script.actions["PutItem"] = [Delay(3.0, after_forward=True)]
    impatient = client("dynamodb", url, read_timeout=1, retries={"total_max_attempts": 1})
    with pytest.raises(ReadTimeoutError):
        impatient.put_item(TableName=table, Item={"job_id": {"S": "late"}})
    assert ddb.get_item(TableName=table, Key={"job_id": {"S": "late"}})["Item"]["job_id"] == {"S": "late"}


@pytest.mark.parametrize("after_forward", [False, True])
def test_a_delay_holds_the_request_once(proxied: tuple[Script, str], after_forward: bool) -> None:
    """A slow request is held before it reaches AWS, a late answer after: never both (a slow publish held
    twice its time kept a chaos run from settling)."""
    script, url = proxied
    waits: list[bool] = []

    class CountedDelay(Delay):
        def wait(self, stopping: threading.Event) -> bool:
            waits.append(self.after_forward)
            return super().wait(stopping)

    ddb = client("dynamodb", url)
    table = f"t-{uuid.uuid4().hex[:8]}"
    ddb.create_table(**table_definition(table))
    script.actions["PutItem"] = [CountedDelay(0.1, after_forward=after_forward)]
    ddb.put_item(TableName=table, Item={"job_id": {"S": "d"}})
    assert waits == [after_forward]


def test_the_proxy_names_the_requests_it_holds_until_they_are_answered(upstream: str) -> None:
    """A run settles only when nothing is held; when one does not, this is how it says what was."""
    proxy = FaultProxy(upstream, script := Script())
    try:
        url = proxy.open(Target("intake", "intake"))
        ddb = client("dynamodb", url)
        table = f"t-{uuid.uuid4().hex[:8]}"
        ddb.create_table(**table_definition(table))
        release = threading.Event()
        script.actions["PutItem"] = [Delay(60.0, until=release)]
        call = threading.Thread(target=ddb.put_item, kwargs={"TableName": table, "Item": {"job_id": {"S": "h"}}})
        call.start()
        deadline = time.monotonic() + 30
        while not proxy.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        (held,) = proxy.in_flight
        assert held.startswith("intake dynamodb PutItem for ")
        release.set()
        call.join(30)
        assert not call.is_alive() and proxy.in_flight == []
    finally:
        proxy.close()


@pytest.mark.parametrize("after_forward", [False, True])
def test_a_kill_runs_the_callback_and_the_caller_hears_nothing(proxied: tuple[Script, str],
                                                               after_forward: bool) -> None:
    script, url = proxied
    ddb = client("dynamodb", url)
    table = f"t-{uuid.uuid4().hex[:8]}"
    ddb.create_table(**table_definition(table))
    killed = threading.Event()
    script.actions["PutItem"] = [Kill(killed.set, after_forward=after_forward)]
    with pytest.raises(ConnectionClosedError):
        client("dynamodb", url, retries={"total_max_attempts": 1}).put_item(TableName=table,
                                                                             Item={"job_id": {"S": "k"}})
    assert killed.is_set()
    written = "Item" in ddb.get_item(TableName=table, Key={"job_id": {"S": "k"}})
    assert written is after_forward  # before: AWS never saw it; after: AWS did it, the process died first


def test_a_stale_receipt_fails_one_entry_of_a_batch_and_the_others_go_through(upstream: str) -> None:
    """ChangeMessageVisibilityBatch: SQS reports an entry's own error in `Failed`, the rest succeed."""
    job = "0123456789abcdef0123456789abcdef"
    injector = FaultInjector()
    injector.start(upstream)
    try:
        url = injector.endpoint_for("worker-1", "worker")
        upload = Upload(0, "uploads/chaos-0/00000.png")
        injector.register(upload, "v1", job)
        arm(injector, "sqs-stale-receipt", upload, {"operation": "ChangeMessageVisibility", "times": 1, "skip": 0},
            FaultTiming())
        sqs = client("sqs", url)
        queue = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"job_id": job}))
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"job_id": "another"}))
        received: list[dict[str, Any]] = []
        while len(received) < 2:
            received += sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
        ids = {("ours" if job in m["Body"] else "other"): m for m in received}
        answer = sqs.change_message_visibility_batch(QueueUrl=queue, Entries=[
            {"Id": name, "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 60} for name, m in ids.items()])
        assert [(f["Id"], f["Code"]) for f in answer["Failed"]] == [("ours", "ReceiptHandleIsInvalid")]
        assert [e["Id"] for e in answer["Successful"]] == ["other"]
        again = sqs.change_message_visibility_batch(QueueUrl=queue, Entries=[
            {"Id": "ours", "ReceiptHandle": ids["ours"]["ReceiptHandle"], "VisibilityTimeout": 60}])
        assert [e["Id"] for e in again["Successful"]] == ["ours"]  # once
    finally:
        injector.close()
