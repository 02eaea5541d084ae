"""One delivery attempt: which jobs get one, what is sent (the body untouched, signed), how answers count."""

from __future__ import annotations

import time
from typing import Any

import pytest
from recording_sender import RecordingSender
from standardwebhooks.webhooks import Webhook

from common.contract import EventType, ImageInfo, Notification
from common.webhook_urls import UrlRules
from functions.webhooks.delivery import Verdict, deliver, judge
from functions.webhooks.sender import HttpResponse, SendFailed
from functions.webhooks.signing import SigningKeys, generate_secret

SECRET = generate_secret()
KEYS = SigningKeys.parse(SECRET)
NOW = 1_700_000_000.0
URL = "https://hooks.example.com/upscaled?token=abc"
RULES = UrlRules()


def _resolve(host: str, port: int) -> list[str]:
    return {"hooks.example.com": ["2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"]}[host]


def _body(event_type: EventType = EventType.SUCCEEDED) -> str:
    return Notification(event_type=event_type, job_id="job-1", input=ImageInfo("in", "uploads/a.png")).to_json()


def _deliver(body: str, job: dict[str, Any] | None, send: RecordingSender | None = None, now: float = NOW) -> Any:
    sender = send or RecordingSender()
    return deliver(body, job, KEYS, sender, rules=RULES, now=now, resolve=_resolve), sender


def test_the_notification_is_posted_byte_for_byte_signed_with_its_event_id() -> None:
    body, now = _body(), time.time()  # the stock library checks the timestamp against its own clock
    attempt, sender = _deliver(body, {"job_id": "job-1", "webhook_url": URL}, now=now)
    assert attempt.verdict is Verdict.DELIVERED
    [request] = sender.requests
    assert request.body == body.encode() and request.url == URL
    assert request.addresses == ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")  # IPv4 first
    assert request.headers["webhook-timestamp"] == str(int(now))
    payload = Webhook(SECRET).verify(request.body, dict(request.headers))
    assert payload["event_id"] == request.headers["webhook-id"] and payload["job_id"] == "job-1"


def test_every_copy_is_identical_but_for_the_timestamp() -> None:
    body = _body()
    _, sender = _deliver(body, {"webhook_url": URL})
    _, again = _deliver(body, {"webhook_url": URL})
    first, second = sender.requests[0], again.requests[0]
    assert (first.body, first.headers) == (second.body, second.headers)


@pytest.mark.parametrize(("job", "event_type", "sent"), [
    (None, EventType.SUCCEEDED, False),  # no record (expired, or not ours)
    ({"job_id": "job-1"}, EventType.SUCCEEDED, False),  # no webhook asked for
    ({"webhook_url": ""}, EventType.SUCCEEDED, False),
    ({"webhook_url": URL, "webhook_events": ["upscale.succeeded"]}, EventType.SUCCEEDED, True),
    ({"webhook_url": URL, "webhook_events": ["upscale.succeeded"]}, EventType.FAILED, False),
    ({"webhook_url": URL, "webhook_events": ["upscale.failed", "upscale.rejected"]}, EventType.REJECTED, True),
    ({"webhook_url": URL}, EventType.CANCELLED, True),  # no filter: every event
    ({"webhook_url": URL, "webhook_events": []}, EventType.SUCCEEDED, False),  # an empty filter: none
])
def test_only_jobs_with_a_webhook_url_get_the_events_they_asked_for(job: dict[str, Any] | None,
                                                                    event_type: EventType, sent: bool) -> None:
    attempt, sender = _deliver(_body(event_type), job)
    assert attempt.verdict is (Verdict.DELIVERED if sent else Verdict.SKIPPED)
    assert len(sender.requests) == int(sent)


@pytest.mark.parametrize("body", ["not json", "[]", '{"event_id": "evt_1", "job_id": "j"}', '{"event_id": 1}'])
def test_a_body_that_is_not_a_notification_is_a_permanent_failure(body: str) -> None:
    attempt, sender = _deliver(body, {"webhook_url": URL})
    assert attempt.verdict is Verdict.PERMANENT and "not a notification" in attempt.detail
    assert sender.requests == []


@pytest.mark.parametrize(("status", "verdict"), [
    (200, Verdict.DELIVERED), (204, Verdict.DELIVERED), (299, Verdict.DELIVERED),
    (301, Verdict.PERMANENT), (302, Verdict.PERMANENT), (307, Verdict.PERMANENT), (308, Verdict.PERMANENT),
    (400, Verdict.PERMANENT), (401, Verdict.PERMANENT), (404, Verdict.PERMANENT), (410, Verdict.PERMANENT),
    (408, Verdict.RETRY), (429, Verdict.RETRY),
    (500, Verdict.RETRY), (502, Verdict.RETRY), (503, Verdict.RETRY), (599, Verdict.RETRY),
    (101, Verdict.PERMANENT), (600, Verdict.PERMANENT),
])
def test_the_receivers_answer(status: int, verdict: Verdict) -> None:
    assert judge(status).verdict is verdict
    attempt, _ = _deliver(_body(), {"webhook_url": URL}, RecordingSender(HttpResponse(status, b"")))
    assert (attempt.verdict, attempt.status) == (verdict, status)


def test_no_answer_is_retried_and_an_oversized_answer_is_not() -> None:
    attempt, _ = _deliver(_body(), {"webhook_url": URL}, RecordingSender(SendFailed("timed out")))
    assert attempt.verdict is Verdict.RETRY and "timed out" in attempt.detail
    attempt, _ = _deliver(_body(), {"webhook_url": URL}, RecordingSender(HttpResponse(200, b"x", oversized=True)))
    assert attempt.verdict is Verdict.PERMANENT
