"""An HTTP proxy per process between the local stack's processes and the emulator, where faults happen.

Each worker job and each Lambda function gets a port of its own (`FaultProxy.open(target)` returns the
endpoint URL that process uses), so a fault can aim at one process, and a kill hits exactly the process
whose request matched. Every request asks the `Decider` for an action: none (forward it), an AWS error
instead of an answer, a delay (before forwarding, or of the answer), a lost answer (forward, then drop
the connection: the caller cannot tell whether the call took effect, and botocore retries it), or a kill
of the calling process (before forwarding, or after forwarding and before answering). The ports stay open
for the stack's lifetime: presigned URLs in notifications name the worker's endpoint.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Protocol

from local_stack.faults.operations import AwsRequest, Response
from local_stack.http_server import BackgroundHttpServer

log = logging.getLogger(__name__)

UPSTREAM_TIMEOUT_SECONDS = 90.0  # above SQS's longest long poll (20 s)
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                         "upgrade", "expect", "content-length", "server", "date"})


@dataclass(frozen=True, slots=True)
class Target:
    """The process behind one proxy port."""

    name: str  # e.g. "intake", "worker 3f2a9c1e"
    kind: str  # "worker", "intake", "notifier", "scaler", "sweeper"


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer with `response` (an AWS error) without forwarding."""

    response: Response


@dataclass(frozen=True, slots=True)
class Delay:
    seconds: float  # at most (the whole delay without `until`)
    after_forward: bool = False  # False: a slow request; True: AWS did it, its answer is late
    until: threading.Event | None = None  # held until this is set (e.g. another request went through)

    def wait(self, stopping: threading.Event) -> bool:
        """Wait out the delay; True when the proxy is stopping instead."""
        if self.until is None:
            return stopping.wait(self.seconds)
        self.until.wait(self.seconds)
        return stopping.is_set()


@dataclass(frozen=True, slots=True)
class LoseResponse:
    """Forward, then drop the connection without answering: the call took effect, the caller cannot know."""


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Forward `body` in place of the request's (None: nothing) and answer with `answer(AWS's response)`: e.g. one
    entry of a batch call fails while the others go through."""

    body: bytes | None
    answer: Callable[[Response | None], Response]


@dataclass(frozen=True, slots=True)
class Kill:
    kill: Callable[[], object]  # SIGKILLs the calling process
    after_forward: bool = False  # True: AWS has done it, the process dies before it hears so


Action = Respond | Delay | LoseResponse | Rewrite | Kill


class Decider(Protocol):
    def decide(self, target: Target, request: AwsRequest) -> Action | None:
        """What happens to this request (None: forwarded untouched)."""
        ...

    def observe(self, target: Target, request: AwsRequest, response: Response) -> None:
        """A forwarded request and the answer AWS gave (whether or not the caller heard it)."""
        ...


class FaultProxy:
    def __init__(self, upstream_url: str, decider: Decider) -> None:
        parts = urllib.parse.urlsplit(upstream_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._decider = decider
        self._servers: list[BackgroundHttpServer] = []
        self._lock = threading.Lock()
        self._in_flight: dict[int, tuple[str, float]] = {}  # id -> what it is, since when (monotonic)
        self._ids = itertools.count()
        self.stopping = threading.Event()

    def open(self, target: Target) -> str:
        """A new port for `target`'s process; returns the endpoint URL it should use."""
        server = BackgroundHttpServer(self._handler_class(target), host="127.0.0.1", port=0,
                                      name=f"fault-proxy-{target.name}")
        server.start()
        with self._lock:
            self._servers.append(server)
        return server.base_url

    @property
    def in_flight(self) -> list[str]:
        """The requests being forwarded or held right now, oldest first, e.g. "worker 3f2a9c1e s3 PutObject for
        12 s"."""
        now = time.monotonic()
        with self._lock:
            return [f"{what} for {now - since:.0f} s" for what, since in sorted(self._in_flight.values(),
                                                                                   key=lambda w: w[1])]

    def close(self) -> None:
        self.stopping.set()
        with self._lock:
            servers, self._servers = self._servers, []
        for server in servers:
            server.stop()

    def _begin(self, target: Target, request: AwsRequest) -> int:
        with self._lock:
            key = next(self._ids)
            self._in_flight[key] = (f"{target.name} {request.service} {request.operation}", time.monotonic())
            return key

    def _end(self, key: int) -> None:
        with self._lock:
            del self._in_flight[key]

    def forward(self, request: AwsRequest) -> Response:
        connection = http.client.HTTPConnection(*self._upstream, timeout=UPSTREAM_TIMEOUT_SECONDS)
        try:
            headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
            if request.body or request.method in ("PUT", "POST"):
                headers["content-length"] = str(len(request.body))
            url = request.path + (f"?{request.query}" if request.query else "")
            connection.request(request.method, url, body=request.body or None, headers=headers)
            answer = connection.getresponse()
            return Response(answer.status, answer.read(), tuple(answer.getheaders()))
        finally:
            connection.close()

    def _handler_class(self, target: Target) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

            def handle_one(self) -> None:
                path, _, query = self.path.partition("?")
                request = AwsRequest(self.command, path, query, {k.lower(): v for k, v in self.headers.items()},
                                     self._body())
                key = proxy._begin(target, request)
                try:
                    self._serve(request, proxy._decider.decide(target, request))
                finally:
                    proxy._end(key)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_one

            def handle(self) -> None:
                with contextlib.suppress(ConnectionError):  # its process was killed between two requests
                    super().handle()

            def _serve(self, request: AwsRequest, action: Action | None) -> None:
                if isinstance(action, Respond):
                    self._reply(action.response, request)
                    return
                if isinstance(action, Rewrite):
                    self._rewrite(request, action)
                    return
                if isinstance(action, Kill) and not action.after_forward:
                    action.kill()
                    self._drop()
                    return
                if isinstance(action, Delay) and not action.after_forward and action.wait(proxy.stopping):
                    self._drop()
                    return
                response = self._forward(request)
                if response is None:
                    return
                if isinstance(action, LoseResponse):
                    self._drop()
                elif isinstance(action, Kill):
                    action.kill()
                    self._drop()
                elif isinstance(action, Delay) and action.after_forward and action.wait(proxy.stopping):
                    self._drop()
                else:
                    self._reply(response, request)

            def _rewrite(self, request: AwsRequest, action: Rewrite) -> None:
                response = None
                if action.body is not None:
                    response = self._forward(AwsRequest(request.method, request.path, request.query,
                                                        request.headers, action.body))
                    if response is None:
                        return
                self._reply(action.answer(response), request)

            def _forward(self, request: AwsRequest) -> Response | None:
                """AWS's answer (seen by the decider), or None: the upstream failed and the caller is dropped."""
                try:
                    response = proxy.forward(request)
                except (OSError, http.client.HTTPException) as exc:
                    log.warning("fault proxy %s: upstream failed: %s", target.name, exc)
                    self._drop()
                    return None
                proxy._decider.observe(target, request, response)
                return response

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _reply(self, response: Response, request: AwsRequest) -> None:
                try:
                    self.send_response(response.status)
                    length = str(len(response.body))
                    for name, value in response.headers:
                        if name.lower() == "content-length" and request.method == "HEAD":
                            length = value  # HEAD: the object's length, with no body
                        elif name.lower() not in _HOP_BY_HOP:
                            self.send_header(name, value)
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    if request.method != "HEAD":
                        self.wfile.write(response.body)
                except OSError:  # the caller is gone (killed, or timed out): nothing to tell it
                    self.close_connection = True

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("fault proxy %s: " + format, target.name, *args)

        return Handler
