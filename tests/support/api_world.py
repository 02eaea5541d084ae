"""The HTTP API on moto, in process: buckets, the jobs table (with its caller index), the topic (captured),
the work queue and a real Intake, and the real Lambda handler invoked with API Gateway HTTP API events.

Used by tests/api (its conftest builds one per test)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from sns_capture import capture_topic, drain_notifications

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "UpscalerTest")

from common import aws
from common.jobs import JobStore
from common.lifecycle import JobLifecycle
from common.notify import Notifier
from common.settings import Settings
from common.webhook_urls import UrlRules
from common.work_queue import WorkQueue
from functions.api import handler
from functions.api.jobs import JobsApi
from functions.intake.intake import Intake
from functions.intake.s3_events import UploadEvent
from local_stack.api_gateway_events import http_api_event, iam_authorizer, response_parts
from local_stack.lambda_context import LocalLambdaContext
from local_stack.resources import create_bucket, create_jobs_table, create_queue

ALICE = "arn:aws:iam::111111111111:user/alice"
BOB = "arn:aws:iam::111111111111:user/bob"
PUBLIC_ADDRESS = "93.184.215.14"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ApiWorld:
    settings: Settings
    api: JobsApi
    store: JobStore
    lifecycle: JobLifecycle
    intake: Intake
    s3: Any
    sqs: Any
    capture_url: str
    clock: list[float]

    def call(self, method: str, path: str, body: Mapping[str, Any] | str | None = None, *, caller: str | None = ALICE,
             authorizer: Mapping[str, Any] | None = None, query: str = "") -> Reply:
        """The real Lambda handler, as API Gateway invokes it for a request with IAM (or the given) authorization."""
        text = body if isinstance(body, str) or body is None else json.dumps(body)
        auth = authorizer if authorizer is not None else (iam_authorizer(caller, "AKIDEXAMPLE") if caller else None)
        event = http_api_event(method, path, query=query, body=text, authorizer=auth,
                               headers={"content-type": "application/json", "x-forwarded-proto": "https"},
                               domain="abc123.execute-api.us-east-1.amazonaws.com")
        result = handler.lambda_handler(event, LocalLambdaContext(
            function_name="upscaler-api", memory_limit_in_mb=512, timeout_seconds=10, region="us-east-1",
            aws_request_id="test"))
        return Reply(*response_parts(result))

    def create(self, caller: str = ALICE, **fields: Any) -> dict[str, Any]:
        body = {"filename": "cat.png", "content_type": "image/png", "size": 1234, **fields}
        reply = self.call("POST", "/v1/jobs", body, caller=caller)
        assert reply.status == 201, reply.json
        return dict(reply.json)

    def upload(self, created: Mapping[str, Any], data: bytes, **changed: str) -> UploadEvent:
        """What S3 stores for a POST of the form (fields as user metadata), and the event it sends."""
        fields = {**created["upload"]["fields"], **changed}
        metadata = {k.removeprefix("x-amz-meta-"): v for k, v in fields.items() if k.startswith("x-amz-meta-")}
        put = self.s3.put_object(Bucket=self.settings.input_bucket, Key=fields["key"], Body=data, Metadata=metadata,
                                 ContentType=fields["Content-Type"])
        return UploadEvent(self.settings.input_bucket, fields["key"], len(data), put["ETag"].strip('"'),
                           put.get("VersionId"), "ObjectCreated:Post")

    def notifications(self) -> list[dict[str, Any]]:
        return [n["payload"] for n in drain_notifications(self.sqs, self.capture_url)]


def make_api_world(monkeypatch: pytest.MonkeyPatch) -> ApiWorld:
    """Inside mock_aws(): the resources, and the handler's JobsApi replaced by one on them."""
    base = Settings(input_bucket="in-test", output_bucket="out-test", jobs_table="jobs-test")
    s3, sqs, sns = (aws.client(name, base) for name in ("s3", "sqs", "sns"))
    for bucket in (base.input_bucket, base.output_bucket):
        create_bucket(s3, bucket, base.region)
    create_jobs_table(aws.client("dynamodb", base), base.jobs_table)
    topic_arn, capture_url = capture_topic(sns, sqs)
    work_url, _ = create_queue(sqs, "work-test")
    settings = base.replace(topic_arn=topic_arn, work_queue_url=work_url)
    store = JobStore(dynamodb_client=aws.client("dynamodb", settings), table_name=settings.jobs_table)
    lifecycle = JobLifecycle(store=store, notifier=Notifier(sns_client=sns, topic_arn=topic_arn,
                                                            upload_prefix=settings.upload_prefix))
    clock = [time.time()]
    api = JobsApi(settings, s3=s3, lifecycle=lifecycle, clock=lambda: clock[0],
                  webhooks=UrlRules(), resolve=lambda host, port: [PUBLIC_ADDRESS])
    intake = Intake(settings, s3=s3, lifecycle=lifecycle, scaler=None,
                    work_queue=WorkQueue(sqs_client=sqs, queue_url=work_url))
    monkeypatch.setattr(handler, "get_api", lambda: api)
    return ApiWorld(settings, api, store, lifecycle, intake, s3, sqs, capture_url, clock)


