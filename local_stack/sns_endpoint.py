"""The local stand-in for the SNS web endpoints a webhook receiver talks to.

Serves the signing certificate (SigningCertURL), confirms subscriptions (SubscribeURL:
GET /?Action=ConfirmSubscription&TopicArn=...&Token=...) and unsubscribes (UnsubscribeURL).
"""

from __future__ import annotations

import logging
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    from local_stack.webhooks import WebhookDelivery

from local_stack.http_server import BackgroundHttpServer

log = logging.getLogger(__name__)

CERT_PATH = "/SimpleNotificationService-local.pem"


class SnsEndpoint:
    def __init__(self, *, certificate_pem: bytes, host: str = "127.0.0.1", port: int = 0) -> None:
        self._cert = certificate_pem
        self.delivery: WebhookDelivery | None = None  # set once the topic exists
        self._server = BackgroundHttpServer(self._handler_class(), host=host, port=port, name="sns-endpoint")

    @property
    def url(self) -> str:
        return self._server.base_url

    @property
    def cert_url(self) -> str:
        return self.url + CERT_PATH

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                if parts.path == CERT_PATH:
                    self._reply(200, endpoint._cert, "application/x-x509-ca-cert")
                    return
                query = dict(urllib.parse.parse_qsl(parts.query))
                action = query.get("Action")
                delivery = endpoint.delivery
                if parts.path != "/" or delivery is None or action not in ("ConfirmSubscription", "Unsubscribe"):
                    self._reply(404, b"not found", "text/plain")
                    return
                if action == "ConfirmSubscription":
                    sub = delivery.confirm(query.get("TopicArn", ""), query.get("Token", ""))
                    if sub is None:
                        self._error("InvalidParameter", "Invalid token")
                        return
                    body = (f"<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>"
                            f"{escape(sub.arn)}</SubscriptionArn></ConfirmSubscriptionResult>"
                            f"{_metadata()}</ConfirmSubscriptionResponse>")
                else:
                    if not delivery.unsubscribe(query.get("SubscriptionArn", "")):
                        self._error("NotFound", "Subscription does not exist")
                        return
                    body = f"<UnsubscribeResponse>{_metadata()}</UnsubscribeResponse>"
                self._reply(200, body.encode(), "text/xml")

            def _error(self, code: str, message: str) -> None:
                body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}"
                        f"</Message></Error>{_metadata()}</ErrorResponse>")
                self._reply(400 if code != "NotFound" else 404, body.encode(), "text/xml")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("sns endpoint: " + format, *args)

        return Handler


def _metadata() -> str:
    return f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
