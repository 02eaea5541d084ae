"""One delivery attempt of one notification to its job's webhook: a plain function, no AWS.

The body is POSTed exactly as SNS carried it (the notification's one serialisation, byte for byte the same
in every copy), signed per Standard Webhooks with `webhook-id` = the notification's `event_id`, so a
receiver dedupes retries and redeliveries on that id. The URL is checked again here, on the addresses DNS
gives now, and the sender connects to exactly those.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.webhook_urls import Resolver, UnresolvableWebhookHost, UnsafeWebhookUrl, UrlRules, system_resolver
from functions.webhooks.sender import HttpRequest, Sender, SendFailed
from functions.webhooks.signing import SigningKeys

# The job record's attributes that ask for a per-request webhook (the HTTP API writes them).
WEBHOOK_URL_ATTRIBUTE = "webhook_url"
WEBHOOK_EVENTS_ATTRIBUTE = "webhook_events"  # a list of event types; absent: every event
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})  # the receiver asks us to come back later


class Verdict(enum.StrEnum):
    SKIPPED = "skipped"  # the job wants no webhook for this event
    DELIVERED = "delivered"
    RETRY = "retry"  # no answer, or a 5xx/408/429: try again later
    PERMANENT = "permanent"  # it will never succeed: an unsafe URL, a 3xx or another 4xx, a malformed body


@dataclass(frozen=True, slots=True)
class Attempt:
    verdict: Verdict
    detail: str
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """What delivery reads from a notification body (it sends the body itself, untouched)."""

    event_id: str
    event_type: str
    job_id: str


def read_notice(body: str) -> Notice:
    """The notification's id, type and job; ValueError when the body is not a notification."""
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"the message body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValueError("the message body is not a JSON object")
    values = [payload.get(name) for name in ("event_id", "event_type", "job_id")]
    if not all(isinstance(value, str) and value for value in values):
        raise ValueError("the notification lacks a string event_id, event_type or job_id")
    return Notice(*(str(value) for value in values))


def wanted(job: Mapping[str, Any] | None, event_type: str) -> str | None:
    """The URL this event goes to, or None (no job record, no webhook, or an event the caller filtered out)."""
    if job is None:
        return None
    url = job.get(WEBHOOK_URL_ATTRIBUTE)
    if not isinstance(url, str) or not url:
        return None
    events = job.get(WEBHOOK_EVENTS_ATTRIBUTE)
    if isinstance(events, list | tuple | set | frozenset) and event_type not in events:
        return None
    return url


def deliver(body: str, job: Mapping[str, Any] | None, keys: SigningKeys, send: Sender, *, rules: UrlRules,
            now: float, resolve: Resolver = system_resolver) -> Attempt:
    """Deliver `body` (an SQS message body: the notification JSON) to `job`'s webhook, once.

    `job` is the job record's attributes (None when there is none); `now` (epoch seconds) is the
    `webhook-timestamp`; `resolve` is called once, and `send` gets exactly the addresses it checked."""
    try:
        notice = read_notice(body)
    except ValueError as exc:
        return Attempt(Verdict.PERMANENT, f"not a notification: {exc}")
    url = wanted(job, notice.event_type)
    if url is None:
        return Attempt(Verdict.SKIPPED, "the job asked for no webhook for this event")
    try:
        addresses = rules.check(url, resolve)
    except UnresolvableWebhookHost as exc:
        return Attempt(Verdict.RETRY, str(exc))
    except UnsafeWebhookUrl as exc:
        return Attempt(Verdict.PERMANENT, f"refused: {exc}")
    payload = body.encode()
    request = HttpRequest(url=url, addresses=tuple(addresses), body=payload,
                          headers=keys.headers(notice.event_id, int(now), payload))
    try:
        response = send(request)
    except SendFailed as exc:
        return Attempt(Verdict.RETRY, f"no answer: {exc}")
    return judge(response.status, oversized=response.oversized)


def judge(status: int, *, oversized: bool = False) -> Attempt:
    """The receiver's answer: 2xx delivered; 5xx, 408, 429 retried; anything else (3xx: redirects are not
    followed; other 4xx; an answer over the size cap) a permanent failure."""
    if oversized:
        return Attempt(Verdict.PERMANENT, f"HTTP {status} with an answer over the size cap", status)
    if 200 <= status < 300:
        return Attempt(Verdict.DELIVERED, f"HTTP {status}", status)
    if 500 <= status < 600 or status in RETRYABLE_CLIENT_ERRORS:
        return Attempt(Verdict.RETRY, f"HTTP {status}", status)
    if 300 <= status < 400:
        return Attempt(Verdict.PERMANENT, f"HTTP {status}: redirects are not followed", status)
    return Attempt(Verdict.PERMANENT, f"HTTP {status}", status)
