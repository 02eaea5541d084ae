"""SNS-style webhook delivery: confirmation, headers, signatures, filter policies, retries, unsubscribe."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from common import aws
from local_stack.emulator import free_port
from local_stack.receiver import LOCAL_CERT_URL_PATTERN, WebhookReceiver
from local_stack.sns_endpoint import SnsEndpoint
from local_stack.webhooks import DeliveryPolicy, WebhookDelivery
from sns_webhook.sign import generate_signing_identity
from sns_webhook.verify import verify_message

FAST = DeliveryPolicy(immediate_retries=1, backoff_retries=8, min_delay_seconds=0.2, max_delay_seconds=1.0,
                      timeout_seconds=5)


class Topic:
    def __init__(self, settings: Any) -> None:
        self.sns = aws.client("sns", settings)
        self.arn = self.sns.create_topic(Name=f"{settings.app_name}-topic")["TopicArn"]
        key, cert = generate_signing_identity()
        self.endpoint = SnsEndpoint(certificate_pem=cert)
        self.endpoint.start()
        self.delivery = WebhookDelivery(
            sqs=aws.client("sqs", settings), sns=self.sns, topic_arn=self.arn, app_name=settings.app_name,
            public_url=self.endpoint.url, signing_cert_url=self.endpoint.cert_url, private_key_pem=key, policy=FAST,
        )
        self.endpoint.delivery = self.delivery

    def publish(self, event_type: str, n: int) -> str:
        """Publishing never waits for webhook endpoints (the hung-endpoint test publishes while one hangs)."""
        message_id = self.sns.publish(
            TopicArn=self.arn, Subject=event_type, Message=json.dumps({"event_type": event_type, "n": n}),
            MessageAttributes={"event_type": {"DataType": "String", "StringValue": event_type}},
        )["MessageId"]
        return str(message_id)

    def close(self) -> None:
        self.delivery.close()
        self.endpoint.stop()


@pytest.fixture(scope="module")
def topic(emulator_settings: Any) -> Iterator[Topic]:
    t = Topic(emulator_settings)
    yield t
    t.close()


@pytest.fixture()
def subscribe(topic: Topic) -> Iterator[Any]:
    """topic.delivery.subscribe, unsubscribed after the test so stopped receivers cause no retries later."""
    made: list[Any] = []

    def sub(url: str, policy: dict[str, Any] | None = None) -> Any:
        made.append(topic.delivery.subscribe(url, policy))
        return made[-1]

    yield sub
    for s in made:
        topic.delivery.unsubscribe(s.arn)


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver().start()
    yield r
    r.stop()


def test_retry_schedule() -> None:
    policy = DeliveryPolicy(immediate_retries=2, backoff_retries=4, min_delay_seconds=1, max_delay_seconds=5)
    assert [policy.delay_before_retry(n) for n in range(1, 8)] == [0, 0, 1, 2, 4, 5, None]


def test_confirmation_then_signed_notification_with_sns_headers(
        topic: Topic, subscribe: Any, receiver: WebhookReceiver, wait: Any) -> None:
    sub = subscribe(receiver.url)
    wait(lambda: sub.status == "Confirmed", timeout=10, what="the subscription to be confirmed")
    assert receiver.confirmed == [topic.arn]

    message_id = topic.publish("upscale.succeeded", 1)
    got = receiver.wait_for(lambda p: p["n"] == 1, timeout=10)[0]
    assert got.payload == {"event_type": "upscale.succeeded", "n": 1}
    assert got.headers["x-amz-sns-message-type"] == "Notification"
    assert got.headers["x-amz-sns-message-id"] == message_id == got.envelope["MessageId"]
    assert got.headers["x-amz-sns-topic-arn"] == topic.arn
    assert got.headers["x-amz-sns-subscription-arn"] == sub.arn
    assert got.headers["content-type"] == "text/plain; charset=UTF-8"
    envelope = got.envelope
    assert envelope["SignatureVersion"] == "2" and envelope["Subject"] == "upscale.succeeded"
    assert envelope["MessageAttributes"]["event_type"] == {"Type": "String", "Value": "upscale.succeeded"}
    assert envelope["SigningCertURL"] == topic.endpoint.cert_url
    verify_message(envelope, cert_url_pattern=LOCAL_CERT_URL_PATTERN, topic_arns={topic.arn})  # canonical string
    tampered = {**envelope, "Message": envelope["Message"].replace("1", "2")}
    with pytest.raises(Exception, match="signature"):
        verify_message(tampered, cert_url_pattern=LOCAL_CERT_URL_PATTERN, topic_arns={topic.arn})
    assert receiver.rejected == 0


def test_filter_policy_on_message_attributes(
        topic: Topic, subscribe: Any, receiver: WebhookReceiver, wait: Any) -> None:
    sub = subscribe(receiver.url, {"event_type": ["upscale.failed"]})
    wait(lambda: sub.status == "Confirmed", timeout=10, what="confirmation")
    topic.publish("upscale.succeeded", 10)
    topic.publish("upscale.failed", 11)
    receiver.wait_for(lambda p: p["n"] == 11, timeout=10)
    time.sleep(0.5)
    assert [n.payload["n"] for n in receiver.notifications] == [11]


def test_endpoint_down_for_a_while_still_gets_the_notification(topic: Topic, subscribe: Any, wait: Any) -> None:
    first = WebhookReceiver().start()
    port = int(first.url.split(":")[2].split("/")[0])
    sub = subscribe(first.url)
    wait(lambda: sub.status == "Confirmed", timeout=10, what="confirmation")
    first.stop()  # the endpoint goes down...
    topic.publish("upscale.rejected", 20)
    wait(lambda: sub.failed_attempts >= 3, timeout=10, what="a few failed delivery attempts")
    again = WebhookReceiver(port=port).start()  # ...and comes back on the same URL
    try:
        got = again.wait_for(lambda p: p["n"] == 20, timeout=15)
        wait(lambda: sub.delivered == 1, timeout=5, what="the delivery to be counted")
        assert len(got) == 1 and sub.gave_up == 0
    finally:
        again.stop()


def test_a_slow_endpoint_does_not_hold_up_another_subscription(
        topic: Topic, subscribe: Any, receiver: WebhookReceiver, wait: Any) -> None:
    slow = WebhookReceiver().start()
    try:
        subs = [subscribe(slow.url, {"event_type": ["upscale.slow"]}),
                subscribe(receiver.url, {"event_type": ["upscale.slow"]})]
        wait(lambda: all(s.status == "Confirmed" for s in subs), timeout=10, what="confirmations")
        slow.answering.clear()  # the slow endpoint hangs on every notification until released
        for n in range(12):  # more than any one subscription's delivery threads
            topic.publish("upscale.slow", 100 + n)
        # every one reaches the other endpoint while the slow one still holds its connections open
        receiver.wait_for(lambda p: p["n"] >= 100, count=12, timeout=60)
        assert not [n for n in slow.notifications if n.payload["n"] >= 100]
        slow.answering.set()
        slow.wait_for(lambda p: p["n"] >= 100, count=12, timeout=60)  # which still gets every one
    finally:
        slow.answering.set()
        slow.stop()


def test_notifications_wait_for_confirmation_and_unsubscribe_stops_them(
        topic: Topic, subscribe: Any, wait: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhook"
    sub = subscribe(url)  # nobody listens yet: the confirmation is retried
    topic.publish("upscale.succeeded", 30)  # published while the subscription is pending
    wait(lambda: sub.failed_attempts >= 2, timeout=10, what="failed confirmation attempts")
    late = WebhookReceiver(port=port).start()
    try:
        late.wait_for(lambda p: p["n"] == 30, timeout=15)
        assert sub.status == "Confirmed"
        unsubscribe_url = late.notifications[0].envelope["UnsubscribeURL"]
        with urllib.request.urlopen(unsubscribe_url, timeout=5) as resp:
            assert b"UnsubscribeResponse" in resp.read()
        assert sub.status == "Deleted"
        topic.publish("upscale.succeeded", 31)
        time.sleep(1.0)
        assert [n.payload["n"] for n in late.notifications] == [30]
    finally:
        late.stop()


def test_sns_endpoint_rejects_a_wrong_token(topic: Topic) -> None:
    bad = f"{topic.endpoint.url}/?Action=ConfirmSubscription&TopicArn={topic.arn}&Token=nope"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=5)
    assert err.value.code == 400
    cert = urllib.request.urlopen(topic.endpoint.cert_url, timeout=5).read()
    assert cert.startswith(b"-----BEGIN CERTIFICATE-----")
