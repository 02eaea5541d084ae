"""Webhook delivery the way SNS HTTP(S) subscriptions deliver, on top of the emulator's topic.

Each webhook subscription is backed by its own SQS queue subscribed to the topic (moto applies the
subscription's filter policy on message attributes when it fans out). A pump per subscription reads
that queue and POSTs signed SNS envelopes; a failed POST is retried on a scheduler with backoff, so a
slow or dead endpoint never blocks the publisher or any other subscription.

Deliberate differences from SNS: notifications published before the subscription is confirmed are
held (in its queue) and delivered after confirmation, where SNS drops them; retries live in memory,
so they do not survive a restart of the local stack; a subscription still pending a few seconds after its
receiver was sent the SubscriptionConfirmation is announced with a warning that says how to confirm it.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.contract import utc_now_iso
from functions.webhooks.delivery import RETRYABLE_CLIENT_ERRORS
from local_stack.resources import create_queue
from local_stack.scheduler import Scheduler
from sns_webhook.sign import sign_message

log = logging.getLogger(__name__)

USER_AGENT = "Amazon Simple Notification Service Agent"


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Retry schedule after a failed delivery: immediate retries, then exponential backoff.

    SNS's default HTTP policy is 3 retries 20 s apart; the local default retries for about 2.5
    minutes (3 immediate, then 1, 2, 4, 8, 16 and 20 s six times) so a restarting receiver catches up.
    """

    immediate_retries: int = 3
    backoff_retries: int = 11
    min_delay_seconds: float = 1.0
    max_delay_seconds: float = 20.0
    timeout_seconds: float = 15.0  # SNS waits 15 s for the endpoint's response
    # After the receiver took the SubscriptionConfirmation: how long it has to confirm before the warning.
    confirmation_grace_seconds: float = 5.0

    def delay_before_retry(self, retry: int) -> float | None:
        """Seconds to wait before retry number `retry` (1-based); None when retries are exhausted."""
        if retry <= self.immediate_retries:
            return 0.0
        step = retry - self.immediate_retries
        if step > self.backoff_retries:
            return None
        return min(self.max_delay_seconds, self.min_delay_seconds * 2 ** (step - 1))


@dataclass
class WebhookSubscription:
    arn: str
    endpoint: str
    filter_policy: Mapping[str, Any] | None
    token: str
    queue_url: str
    sns_subscription_arn: str
    # Its own delivery threads and retry timer: a slow or dead endpoint cannot starve another subscription.
    scheduler: Scheduler = field(repr=False)
    status: str = "PendingConfirmation"  # -> Confirmed | Deleted
    delivered: int = 0
    gave_up: int = 0
    failed_attempts: int = 0
    confirmed: threading.Event = field(default_factory=threading.Event, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    ok: bool
    retryable: bool
    detail: str


class WebhookDelivery:
    def __init__(self, *, sqs: Any, sns: Any, topic_arn: str, app_name: str, public_url: str,
                 signing_cert_url: str, private_key_pem: bytes, policy: DeliveryPolicy = DeliveryPolicy(),
                 concurrency_per_subscription: int = 4) -> None:
        self._sqs = sqs
        self._sns = sns
        self._topic_arn = topic_arn
        self._app_name = app_name
        self._public_url = public_url.rstrip("/")
        self._cert_url = signing_cert_url
        self._key = private_key_pem
        self.policy = policy
        self._concurrency = concurrency_per_subscription
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pumps: list[threading.Thread] = []
        self.subscriptions: dict[str, WebhookSubscription] = {}
        # Called with (endpoint, message) for every notification an endpoint accepted (`local up`'s job log).
        self.delivered_listeners: list[Callable[[str, str], None]] = []

    # --- subscriptions -------------------------------------------------------------------
    def subscribe(self, endpoint: str, filter_policy: Mapping[str, Any] | None = None) -> WebhookSubscription:
        """Subscribe an http(s) endpoint; sends the SubscriptionConfirmation right away (asynchronously)."""
        if urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
            raise ValueError(f"webhook endpoint must be an http(s) URL, got {endpoint!r}")
        sub_id = str(uuid.uuid4())
        queue_url, queue_arn = create_queue(self._sqs, f"{self._app_name}-webhook-{sub_id[:8]}")
        attributes = {"RawMessageDelivery": "false"}
        if filter_policy:
            attributes["FilterPolicy"] = json.dumps(filter_policy)
        sns_sub = self._sns.subscribe(TopicArn=self._topic_arn, Protocol="sqs", Endpoint=queue_arn,
                                      Attributes=attributes, ReturnSubscriptionArn=True)
        sub = WebhookSubscription(
            arn=f"{self._topic_arn}:{sub_id}",
            endpoint=endpoint,
            filter_policy=dict(filter_policy) if filter_policy else None,
            token=secrets.token_hex(64),
            queue_url=queue_url,
            sns_subscription_arn=str(sns_sub["SubscriptionArn"]),
            scheduler=Scheduler(max_workers=self._concurrency, name=f"webhook-{sub_id[:8]}"),
        )
        with self._lock:
            self.subscriptions[sub.arn] = sub
        pump = threading.Thread(target=self._pump, args=(sub,), name=f"webhook-pump-{sub_id[:8]}", daemon=True)
        self._pumps.append(pump)
        pump.start()
        sub.scheduler.submit(lambda: self._send_confirmation(sub, attempt=1))
        return sub

    def confirm(self, topic_arn: str, token: str) -> WebhookSubscription | None:
        """The SubscribeURL was visited: the subscription starts receiving notifications."""
        with self._lock:
            sub = next((s for s in self.subscriptions.values()
                        if secrets.compare_digest(s.token.encode(), token.encode())), None)
        if topic_arn != self._topic_arn:
            return None
        if sub is None or sub.status == "Deleted":
            return None
        sub.status = "Confirmed"
        sub.confirmed.set()
        log.info("webhook %s confirmed (%s)", sub.endpoint, sub.arn)
        return sub

    def unsubscribe(self, arn: str) -> bool:
        with self._lock:
            sub = self.subscriptions.get(arn)
        if sub is None or sub.status == "Deleted":
            return False
        sub.status = "Deleted"
        sub.confirmed.set()  # wakes the pump, which then exits
        self._sns.unsubscribe(SubscriptionArn=sub.sns_subscription_arn)
        return True

    def close(self) -> None:
        self._stop.set()
        for sub in self.subscriptions.values():
            sub.confirmed.set()
        for pump in self._pumps:
            pump.join(5)
        for sub in self.subscriptions.values():
            sub.scheduler.close()

    def pending_retries(self) -> int:
        return sum(s.scheduler.pending() for s in self.subscriptions.values())

    # --- delivery ------------------------------------------------------------------------
    def _pump(self, sub: WebhookSubscription) -> None:
        sub.confirmed.wait()
        while not self._stop.is_set() and sub.status == "Confirmed":
            try:
                messages = self._sqs.receive_message(
                    QueueUrl=sub.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                ).get("Messages", [])
            except Exception:
                if not self._stop.is_set():
                    log.exception("webhook pump %s: receive failed", sub.endpoint)
                    self._stop.wait(1.0)
                continue
            for message in messages:
                envelope = json.loads(message["Body"])
                # From here the retry schedule owns the message (in memory, like SNS's own retries).
                self._sqs.delete_message(QueueUrl=sub.queue_url, ReceiptHandle=message["ReceiptHandle"])
                sub.scheduler.submit(functools.partial(self._send_notification, sub, envelope, attempt=1))

    def _send_notification(self, sub: WebhookSubscription, envelope: Mapping[str, Any], attempt: int) -> None:
        if sub.status == "Deleted" or self._stop.is_set():
            return
        message: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": envelope["MessageId"],
            "TopicArn": self._topic_arn,
            "Message": envelope["Message"],
            "Timestamp": envelope["Timestamp"],
            "SigningCertURL": self._cert_url,
            "UnsubscribeURL": self._action_url("Unsubscribe", SubscriptionArn=sub.arn),
        }
        if envelope.get("Subject") is not None:
            message["Subject"] = envelope["Subject"]
        if envelope.get("MessageAttributes"):
            message["MessageAttributes"] = envelope["MessageAttributes"]
        result = self._post(sub, sign_message(message, self._key, signature_version="2"),
                            subscription_header=True)
        if result.ok:
            sub.count("delivered")
            for listener in self.delivered_listeners:
                listener(sub.endpoint, str(envelope["Message"]))
            return
        self._retry_later(sub, attempt, result, lambda: self._send_notification(sub, envelope, attempt + 1),
                          what=f"notification {envelope['MessageId']}")

    def _send_confirmation(self, sub: WebhookSubscription, attempt: int) -> None:
        if sub.status != "PendingConfirmation" or self._stop.is_set():
            return
        message = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": sub.token,
            "TopicArn": self._topic_arn,
            "Message": (f"You have chosen to subscribe to the topic {self._topic_arn}.\n"
                        "To confirm the subscription, visit the SubscribeURL included in this message."),
            "SubscribeURL": self._action_url("ConfirmSubscription", TopicArn=self._topic_arn, Token=sub.token),
            "Timestamp": utc_now_iso(),
            "SigningCertURL": self._cert_url,
        }
        result = self._post(sub, sign_message(message, self._key, signature_version="2"),
                            subscription_header=False)
        if result.ok:
            sub.scheduler.submit(lambda: self._warn_if_pending(sub, str(message["SubscribeURL"])),
                                 self.policy.confirmation_grace_seconds)
        else:
            self._retry_later(sub, attempt, result, lambda: self._send_confirmation(sub, attempt + 1),
                              what="subscription confirmation")

    def _warn_if_pending(self, sub: WebhookSubscription, subscribe_url: str) -> None:
        """A receiver that does not confirm gets nothing, as with SNS: say so where the operator looks."""
        if sub.status != "PendingConfirmation" or self._stop.is_set():
            return
        rule = "!" * 100
        log.warning("\n%s\nwebhook %s: subscription PENDING CONFIRMATION. Its receiver took the "
                    "SubscriptionConfirmation but did not\nconfirm it, so it gets no notifications (as with SNS). "
                    "Confirm it by fetching its SubscribeURL:\n  curl '%s'\n%s",
                    rule, sub.endpoint, subscribe_url, rule)

    def _retry_later(self, sub: WebhookSubscription, attempt: int, result: DeliveryResult, again: Any,
                     *, what: str) -> None:
        sub.count("failed_attempts")
        delay = self.policy.delay_before_retry(attempt) if result.retryable else None
        if delay is None:
            sub.count("gave_up")
            log.error("webhook %s: giving up on %s after %d attempt(s): %s", sub.endpoint, what, attempt,
                      result.detail)
            return
        log.warning("webhook %s: %s attempt %d failed (%s); retrying in %.1fs", sub.endpoint, what, attempt,
                    result.detail, delay)
        sub.scheduler.submit(again, delay)

    def _post(self, sub: WebhookSubscription, message: Mapping[str, Any], *,
              subscription_header: bool) -> DeliveryResult:
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "User-Agent": USER_AGENT,
            "x-amz-sns-message-type": str(message["Type"]),
            "x-amz-sns-message-id": str(message["MessageId"]),
            "x-amz-sns-topic-arn": self._topic_arn,
        }
        if subscription_header:
            headers["x-amz-sns-subscription-arn"] = sub.arn
        body = json.dumps(message, indent=2).encode("utf-8")
        request = urllib.request.Request(sub.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.policy.timeout_seconds) as resp:
                resp.read()
                return DeliveryResult(True, False, f"HTTP {resp.status}")
        except urllib.error.HTTPError as exc:
            retryable = exc.code >= 500 or exc.code in RETRYABLE_CLIENT_ERRORS
            return DeliveryResult(False, retryable, f"HTTP {exc.code}")
        except (OSError, ValueError) as exc:  # refused, reset, timed out, DNS
            return DeliveryResult(False, True, f"{type(exc).__name__}: {exc}")

    def _action_url(self, action: str, **params: str) -> str:
        return f"{self._public_url}/?" + urllib.parse.urlencode({"Action": action, **params})
