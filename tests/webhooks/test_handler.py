"""The delivery Lambda's handler against moto: the notification published to the topic reaches the delivery
queue (raw), and the handler delivers, skips, retries or dead-letters each record (partial batch failures).

Only the HTTP sender and DNS are fakes; the job records, the secret (through Powertools), the queues and
the topic subscription are moto's, made by the same code the local stack uses.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws
from recording_sender import RecordingSender
from standardwebhooks.webhooks import Webhook

from common import aws
from common.contract import ErrorInfo, EventType, ImageInfo, Notification
from common.jobs import JobStore
from common.notify import Notifier
from common.settings import Settings
from functions.webhooks import handler
from functions.webhooks.sender import HttpResponse
from local_stack.lambda_context import LocalLambdaContext
from local_stack.per_request_webhooks import DeliveryResources, create_delivery_resources
from local_stack.resources import create_jobs_table
from local_stack.sqs_events import sqs_event

URL = "https://hooks.example.com/upscaled"


def _resolve(host: str, port: int) -> list[str]:
    return {"hooks.example.com": ["93.184.216.34"]}[host]


@dataclasses.dataclass
class World:
    settings: Settings
    resources: DeliveryResources
    notifier: Notifier
    store: JobStore
    sender: RecordingSender
    visibility_changes: list[dict[str, Any]]

    def job(self, **attributes: Any) -> str:
        job_id = uuid.uuid4().hex
        self.store.create(job_id=job_id, dedupe=job_id, input_bucket="in", input_key="uploads/a.png",
                          attributes=attributes)
        return job_id

    def publish(self, job_id: str, event_type: EventType = EventType.SUCCEEDED) -> str:
        """Publish as the lifecycle does; returns the body every copy carries."""
        succeeded = event_type is EventType.SUCCEEDED
        notification = Notification(
            event_type=event_type, job_id=job_id, input=ImageInfo("in", "uploads/a.png"),
            output=ImageInfo("out", "outputs/a.png") if succeeded else None,
            presigned_url="https://out.example/a.png" if succeeded else None,
            error=None if succeeded else ErrorInfo("INTERNAL_ERROR", "it broke"))
        self.notifier.publish_text(notification.to_json())
        return notification.to_json()

    def receive(self, queue_url: str | None = None) -> list[dict[str, Any]]:
        return aws.client("sqs", self.settings).receive_message(
            QueueUrl=queue_url or self.resources.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"],
            MessageAttributeNames=["All"]).get("Messages", [])

    def run(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        event = sqs_event(messages, queue_arn=self.resources.queue_arn, region=self.settings.region)
        context = LocalLambdaContext(function_name="webhooks", memory_limit_in_mb=256, timeout_seconds=120,
                                     region=self.settings.region, aws_request_id=str(uuid.uuid4()))
        return dict(handler.lambda_handler(event, context))  # type: ignore[arg-type]


@pytest.fixture
def world(aws_creds: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with mock_aws():
        base = Settings(app_name=f"t{uuid.uuid4().hex[:6]}")
        sns = aws.client("sns", base)
        topic_arn = sns.create_topic(Name=f"{base.app_name}-notifications")["TopicArn"]
        create_jobs_table(aws.client("dynamodb", base), base.jobs_table)
        resources = create_delivery_resources(base, topic_arn)
        settings = base.replace(topic_arn=topic_arn, webhook_secret_arn=resources.secret_arn,
                                webhook_dlq_url=resources.dlq_url)
        for name, value in settings.to_env().items():
            monkeypatch.setenv(name, value)
        build = handler.deps
        build.cache_clear()
        sender = RecordingSender()
        real = build()  # as the Lambda builds it; only the network is replaced
        monkeypatch.setattr(handler, "deps", lambda: dataclasses.replace(real, send=sender, resolve=_resolve))
        changes: list[dict[str, Any]] = []
        real.sqs.meta.events.register("provide-client-params.sqs.ChangeMessageVisibility",
                                      lambda params, **_: changes.append(dict(params)))
        yield World(settings=settings, resources=resources, sender=sender, visibility_changes=changes,
                    notifier=Notifier(sns_client=sns, topic_arn=topic_arn, upload_prefix=settings.upload_prefix),
                    store=JobStore(dynamodb_client=aws.client("dynamodb", settings), table_name=settings.jobs_table))
        build.cache_clear()


def test_a_job_with_a_webhook_url_gets_one_signed_post_of_the_exact_notification(world: World) -> None:
    body = world.publish(world.job(webhook_url=URL, caller="acme"))
    messages = world.receive()
    assert [m["Body"] for m in messages] == [body]  # raw delivery: the queue holds the notification itself
    assert world.run(messages) == {"batchItemFailures": []}
    [request] = world.sender.requests
    assert request.body == body.encode() and request.addresses == ("93.184.216.34",)
    payload = Webhook(world.resources.secret).verify(request.body, dict(request.headers))
    assert request.headers["webhook-id"] == payload["event_id"]


def test_jobs_without_a_webhook_or_filtered_out_get_nothing(world: World) -> None:
    world.publish(world.job())
    world.publish(world.job(webhook_url=URL, webhook_events=["upscale.failed"]))  # succeeded: not asked for
    world.publish(uuid.uuid4().hex)  # no job record at all
    wanted = world.publish(world.job(webhook_url=URL, webhook_events=["upscale.failed"]), EventType.FAILED)
    messages = world.receive()
    assert len(messages) == 4
    assert world.run(messages) == {"batchItemFailures": []}  # all done: nothing left to retry
    assert [r.body for r in world.sender.requests] == [wanted.encode()]


def test_a_failing_receiver_is_retried_later_by_a_visibility_change(world: World) -> None:
    world.sender.response = HttpResponse(503, b"")
    world.publish(world.job(webhook_url=URL))
    [message] = world.receive()
    assert world.run([message]) == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    [change] = world.visibility_changes
    assert change["ReceiptHandle"] == message["ReceiptHandle"]
    assert 15 <= change["VisibilityTimeout"] <= 30  # the first backoff, with jitter
    assert world.receive(world.resources.dlq_url) == []


def test_a_permanent_failure_is_dead_lettered_with_its_reason_and_attributes(world: World) -> None:
    world.sender.response = HttpResponse(404, b"")
    body = world.publish(world.job(webhook_url=URL))
    [message] = world.receive()
    assert world.run([message]) == {"batchItemFailures": []}  # moved, so deleted from the delivery queue
    [dead] = world.receive(world.resources.dlq_url)
    assert dead["Body"] == body
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert attributes["failure_reason"] == "HTTP 404" and attributes["receive_count"] == "1"
    assert attributes["event_id"] == json.loads(body)["event_id"]  # the SNS attributes travel along


@pytest.mark.parametrize("url", ["http://hooks.example.com/upscaled", "https://169.254.169.254/latest/"])
def test_an_unsafe_url_is_dead_lettered_without_a_request(world: World, url: str) -> None:
    world.publish(world.job(webhook_url=url))
    assert world.run(world.receive()) == {"batchItemFailures": []}
    [dead] = world.receive(world.resources.dlq_url)
    assert dead["MessageAttributes"]["failure_reason"]["StringValue"].startswith("refused: ")
    assert world.sender.requests == []


def test_a_message_older_than_24_hours_is_dead_lettered_instead_of_retried(world: World) -> None:
    world.sender.response = HttpResponse(503, b"")
    world.publish(world.job(webhook_url=URL))
    [message] = world.receive()
    message["Attributes"]["SentTimestamp"] = str(int((time.time() - 25 * 3600) * 1000))
    assert world.run([message]) == {"batchItemFailures": []}
    [dead] = world.receive(world.resources.dlq_url)
    assert "gave up after 24 h" in dead["MessageAttributes"]["failure_reason"]["StringValue"]
    assert world.visibility_changes == []


def test_a_message_that_is_not_a_notification_is_dead_lettered(world: World) -> None:
    sqs = aws.client("sqs", world.settings)
    sqs.send_message(QueueUrl=world.resources.queue_url, MessageBody="garbage")
    assert world.run(world.receive()) == {"batchItemFailures": []}
    [dead] = world.receive(world.resources.dlq_url)
    assert dead["Body"] == "garbage"


def test_a_broken_secret_fails_the_whole_batch_for_a_later_retry(world: World) -> None:
    from functions.webhooks.signing import SecretError

    aws.client("secretsmanager", world.settings).put_secret_value(SecretId=world.resources.secret_arn,
                                                                  SecretString="not a secret")
    world.publish(world.job(webhook_url=URL))
    with pytest.raises(SecretError):
        world.run(world.receive())
    assert world.sender.requests == []
