"""A small webhook receiver: verifies SNS signatures with sns_webhook, confirms, records notifications.

Used by `upscaler demo`, the end-to-end tests and the load benchmark, and a template for a real one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from local_stack.http_server import BackgroundHttpServer
from sns_webhook.confirm import confirm_subscription
from sns_webhook.verify import ANY_TOPIC, SignatureError, verify_message

log = logging.getLogger(__name__)

# The local stack serves its certificate and SubscribeURL from 127.0.0.1; real SNS from sns.*.amazonaws.com.
LOCAL_CERT_URL_PATTERN = r"http://127\.0\.0\.1:\d+/[A-Za-z0-9._/-]+\.pem"
LOCAL_SUBSCRIBE_URL_PATTERN = r"http://127\.0\.0\.1:\d+/\?.*"


@dataclass(frozen=True, slots=True)
class ReceivedNotification:
    payload: dict[str, Any]  # the upscaler notification (the SNS Message, parsed)
    envelope: dict[str, Any]  # the SNS envelope as POSTed
    headers: dict[str, str]
    received_at: float  # time.time()


class WebhookReceiver:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, topic_arns: list[str] | None = None,
                 cert_url_pattern: str = LOCAL_CERT_URL_PATTERN,
                 subscribe_url_pattern: str = LOCAL_SUBSCRIBE_URL_PATTERN, path: str = "/webhook") -> None:
        # None: the one local topic, whatever its ARN (an explicit opt-out of the topic allow-list)
        self._verify_options: dict[str, Any] = {"cert_url_pattern": cert_url_pattern,
                                                "topic_arns": ANY_TOPIC if topic_arns is None else topic_arns}
        self._subscribe_url_pattern = subscribe_url_pattern
        self._path = path
        self._cond = threading.Condition()
        self.notifications: list[ReceivedNotification] = []
        self.confirmed: list[str] = []  # TopicArn of each confirmed subscription
        self.rejected = 0  # deliveries that failed verification
        self.response_delay = 0.0  # seconds to wait before answering a Notification (a slow endpoint)
        self.answering = threading.Event()  # cleared: Notifications wait (a hung endpoint) until it is set again
        self.answering.set()
        self._server = BackgroundHttpServer(self._handler_class(), host=host, port=port, name="webhook-receiver")

    @property
    def url(self) -> str:
        return self._server.base_url + self._path

    def start(self) -> WebhookReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], *, count: int = 1,
                 timeout: float = 60.0) -> list[ReceivedNotification]:
        """Block until `count` notifications satisfy `predicate`; returns them (TimeoutError if not)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [n for n in self.notifications if predicate(n.payload)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(found)}/{count} matching notifications after {timeout}s")
                self._cond.wait(remaining)

    def for_job(self, job_id: str) -> list[ReceivedNotification]:
        with self._cond:
            return [n for n in self.notifications if n.payload.get("job_id") == job_id]

    def _handle(self, headers: dict[str, str], body: bytes) -> int:
        try:
            message = json.loads(body)
        except ValueError:
            return 400
        if headers.get("x-amz-sns-message-type") != message.get("Type"):
            return 400
        try:
            if message["Type"] == "SubscriptionConfirmation":
                confirm_subscription(message, subscribe_url_pattern=self._subscribe_url_pattern,
                                     **self._verify_options)
                with self._cond:
                    self.confirmed.append(str(message["TopicArn"]))
                return 200
            verify_message(message, **self._verify_options)
        except (SignatureError, ValueError) as exc:
            log.warning("webhook receiver: rejected a delivery: %s", exc)
            with self._cond:
                self.rejected += 1
            return 403
        if message["Type"] == "Notification":
            time.sleep(self.response_delay)
            self.answering.wait()
            received = ReceivedNotification(json.loads(message["Message"]), message, headers, time.time())
            with self._cond:
                self.notifications.append(received)
                self._cond.notify_all()
        return 200

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver._handle(headers, body) if self.path == receiver._path else 404
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                log.debug("webhook receiver: " + format, *args)

        return Handler
