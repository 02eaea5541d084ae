"""Run a real Lambda handler the way the Lambda service does: in its own process, with its own environment.

Each function gets up to `concurrency` host processes (execution environments), started with exactly
the environment the CDK stack gives the function (Settings.to_env() + credentials), so the handler's
init code sees what it sees in AWS and nothing leaks into the caller's process. A host that dies is
replaced on the next invocation (a new cold start), as Lambda does. The function's timeout is enforced as
Lambda does: an invocation still running at its timeout has its execution environment killed, and fails
("Task timed out after N seconds"); the context reports the time really left.
"""

from __future__ import annotations

import dataclasses
import queue
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from typing import IO, Any

from local_stack.json_child import ChildExited, JsonLinesChild
from local_stack.lambda_context import LocalLambdaContext


class LambdaInvocationError(RuntimeError):
    """The handler raised, its environment died, or it timed out: Lambda reports a function error."""


class _Host(JsonLinesChild):
    """One execution environment: `local_stack.lambda_host` importing the handler once, then invoking it."""

    def __init__(self, handler: str, environment: Mapping[str, str], log: IO[str] | None) -> None:
        super().__init__([sys.executable, "-m", "local_stack.lambda_host", handler], environment, log)
        hello = self._read()
        if "init_error" in hello:
            self.close()
            raise LambdaInvocationError(f"{handler}: init failed: {hello['init_error']}\n{hello['trace']}")

    def _read(self) -> dict[str, Any]:
        try:
            return self.read()
        except ChildExited as exc:
            raise LambdaInvocationError(f"execution environment {exc}") from exc

    def invoke(self, request: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        timed_out = threading.Event()

        def time_out() -> None:
            timed_out.set()
            self.process.kill()

        timer = threading.Timer(timeout, time_out)
        timer.daemon = True
        timer.start()
        try:
            self.send(request)
            return self._read()
        except OSError as exc:
            if timed_out.is_set():
                raise LambdaInvocationError(f"Task timed out after {timeout:.2f} seconds") from None
            raise LambdaInvocationError(f"execution environment is gone: {exc}") from exc
        except LambdaInvocationError:
            if timed_out.is_set():
                raise LambdaInvocationError(f"Task timed out after {timeout:.2f} seconds") from None
            raise
        finally:
            timer.cancel()


class LambdaRuntime:
    """One function: `invoke(event)` runs `module:function` in one of its execution environments."""

    def __init__(self, *, function_name: str, handler: str, environment: Mapping[str, str], region: str,
                 concurrency: int = 1, memory_mb: int = 1024, timeout_seconds: int = 60,
                 log: IO[str] | None = None) -> None:
        """`log`: a real file for the function's logs (default: this process's stderr)."""
        self._log = log
        self.function_name = function_name
        self.handler = handler
        self._environment = dict(environment)
        self._region = region
        self._memory_mb = memory_mb
        self._timeout = timeout_seconds
        self._idle: queue.Queue[_Host | None] = queue.Queue()
        for _ in range(concurrency):
            self._idle.put(None)  # a slot without an environment yet: started on first use (cold start)
        self._all: list[_Host] = []
        self._lock = threading.Lock()
        self._closed = False
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Invocations running now."""
        with self._lock:
            return self._in_flight

    def warm(self) -> None:
        """Start one execution environment now (import the handler) so the first event is not a cold start."""
        slot = self._idle.get()
        try:
            slot = slot if slot is not None and slot.alive() else self._start_host()
        finally:
            self._idle.put(slot)

    def invoke(self, event: Mapping[str, Any]) -> Any:
        """Synchronous invocation (RequestResponse). Raises LambdaInvocationError on a function error."""
        host = self._idle.get()
        with self._lock:
            self._in_flight += 1
        try:
            if self._closed:
                raise LambdaInvocationError(f"{self.function_name}: runtime closed")
            if host is None or not host.alive():
                host = self._start_host()  # a cold start: its init does not count against the timeout
            context = LocalLambdaContext(function_name=self.function_name, memory_limit_in_mb=self._memory_mb,
                                         timeout_seconds=self._timeout, region=self._region,
                                         aws_request_id=str(uuid.uuid4()),
                                         deadline_ms=int((time.time() + self._timeout) * 1000))
            outcome = host.invoke({"event": dict(event), "context": dataclasses.asdict(context)}, self._timeout)
        except LambdaInvocationError:
            if host is not None and not host.alive():
                host = None
            raise
        finally:
            self._idle.put(host)
            with self._lock:
                self._in_flight -= 1
        if "error" in outcome:
            raise LambdaInvocationError(f"{self.function_name}: {outcome['error']}\n{outcome['trace']}")
        return outcome["result"]

    def _start_host(self) -> _Host:
        host = _Host(self.handler, self._environment, self._log)
        with self._lock:
            self._all.append(host)
        return host

    def close(self) -> None:
        self._closed = True
        with self._lock:
            hosts, self._all = self._all, []
        for host in hosts:  # idle (the event sources stopped first): nothing is lost, no teardown to wait for
            host.process.terminate()
        for host in hosts:
            host.close()
