"""One HTTP POST to a webhook receiver, connecting only to addresses the SSRF rules already passed.

The caller resolves and checks the host once (common.webhook_urls); this module never resolves it again:
it opens the TCP connection to exactly one of the checked addresses, while TLS (SNI and certificate
check) and the Host header still name the URL's host, so a DNS answer that changes between the check and
the connection (DNS rebinding) cannot steer the request elsewhere. Redirects are never followed (a 3xx
is returned like any other status), content is never decompressed, at most `max_response_bytes` of the
answer are read, and one deadline bounds the whole exchange (a receiver that drips bytes cannot hold it).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from common.webhook_urls import Resolver

USER_AGENT = "upscaler-webhooks/1"
DNS_TIMEOUT_SECONDS = 5.0  # a receiver's own name server can be made slow on purpose
CONNECT_TIMEOUT_SECONDS = 5.0
TOTAL_TIMEOUT_SECONDS = 15.0  # connect, send, and read the answer
MAX_RESPONSE_BYTES = 64 * 1024  # a receiver's answer is not used: this only bounds what we accept
_READ_CHUNK = 8192


@dataclass(frozen=True, slots=True)
class HttpRequest:
    url: str
    addresses: tuple[str, ...]  # checked addresses of the URL's host: connect to these, in order, and nothing else
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes  # at most the sender's max_response_bytes
    oversized: bool = False  # the receiver answered with more than that (the rest was not read)


class SendFailed(Exception):
    """No answer: refused, reset, TLS failure or timed out (worth another try later)."""


Sender = Callable[[HttpRequest], HttpResponse]


@dataclass(frozen=True)
class PinnedSender:
    """The real sender (see the module docstring). `ssl_context` lets tests trust their own certificate."""

    connect_timeout: float = CONNECT_TIMEOUT_SECONDS
    total_timeout: float = TOTAL_TIMEOUT_SECONDS
    max_response_bytes: int = MAX_RESPONSE_BYTES
    ssl_context: ssl.SSLContext = field(default_factory=ssl.create_default_context)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        parts = urlsplit(request.url)
        host, https = parts.hostname or "", parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        deadline = time.monotonic() + self.total_timeout
        sock = self._connect(request.addresses, port, deadline)
        if https:  # no I/O yet: the handshake happens on first use, under the deadline below
            sock = self.ssl_context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        # One deadline for everything after connect: shutting the socket down wakes any read that waits.
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), _shut, args=(sock,))
        timer.start()
        try:
            response = self._exchange(sock, request, host, port, https, target)
        except (OSError, http.client.HTTPException) as exc:
            late = time.monotonic() >= deadline
            raise SendFailed("timed out" if late else f"{type(exc).__name__}: {exc}") from exc
        finally:
            timer.cancel()
            sock.close()
        if time.monotonic() >= deadline:  # the answer may be cut short by the shutdown: not an answer
            raise SendFailed("timed out")
        return response

    def _connect(self, addresses: tuple[str, ...], port: int, deadline: float) -> socket.socket:
        errors = []
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                sock = socket.create_connection((address, port), timeout=min(self.connect_timeout, remaining))
            except OSError as exc:
                errors.append(f"{address}: {exc}")
                continue
            sock.settimeout(self.total_timeout)
            return sock
        raise SendFailed("could not connect: " + ("; ".join(errors) or "timed out"))

    def _exchange(self, sock: socket.socket, request: HttpRequest, host: str, port: int, https: bool,
                  target: str) -> HttpResponse:
        connection_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
        connection = connection_class(host, port, timeout=self.total_timeout)  # Host: the URL's host
        connection.sock = sock  # already connected: http.client does not connect (or resolve) again
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json", "Connection": "close",
                   **request.headers}
        connection.request("POST", target, body=request.body, headers=headers)
        response = connection.getresponse()
        declared = response.getheader("Content-Length") or ""
        if declared.isdigit() and int(declared) > self.max_response_bytes:
            return HttpResponse(response.status, b"", oversized=True)
        body = b""
        while len(body) <= self.max_response_bytes:
            chunk = response.read(min(_READ_CHUNK, self.max_response_bytes + 1 - len(body)))
            if not chunk:
                return HttpResponse(response.status, body)
            body += chunk
        return HttpResponse(response.status, body[: self.max_response_bytes], oversized=True)


def resolver_with_deadline(resolve: Resolver, timeout: float = DNS_TIMEOUT_SECONDS) -> Resolver:
    """`resolve`, given up on after `timeout` (OSError: the delivery is retried later). getaddrinfo has no
    timeout of its own; the abandoned lookup ends on its own in its daemon thread."""

    def bounded(host: str, port: int) -> Sequence[str]:
        answer: list[Sequence[str]] = []
        failure: list[BaseException] = []

        def lookup() -> None:
            try:
                answer.append(resolve(host, port))
            except BaseException as exc:  # handed to the caller's thread
                failure.append(exc)

        thread = threading.Thread(target=lookup, name="webhook-dns", daemon=True)
        thread.start()
        thread.join(timeout)
        if failure:
            raise failure[0]
        if not answer:
            raise OSError(f"DNS lookup of {host} timed out after {timeout:g}s")
        return answer[0]

    return bounded


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)
