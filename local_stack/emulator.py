"""The AWS emulator: moto in server mode (local_stack.moto_server), own process, 127.0.0.1, free port.

A separate process (not moto's in-process ThreadedMotoServer) so the emulator gets its own core and
its own global state: moto's in-process mocks used by unit tests reset every backend when they stop.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from typing import IO

LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmulatorError(RuntimeError):
    pass


class MotoServer:
    """`python -m moto.server` as a child process; `endpoint_url` once started."""

    def __init__(self, *, port: int = 0, host: str = LOCALHOST, log: IO[str] | None = None) -> None:
        self._host = host
        self._requested_port = port
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        if not self.port:
            raise EmulatorError("emulator not started")
        return f"http://{self._host}:{self.port}"

    def start(self, *, timeout: float = 30.0) -> str:
        # Binding port 0 inside moto is not possible from the command line; pick a free port and retry
        # if someone else grabbed it in between.
        for _ in range(3):
            self.port = self._requested_port or free_port(self._host)
            self._process = subprocess.Popen(
                [sys.executable, "-m", "local_stack.moto_server", "-H", self._host, "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=self._log if self._log is not None else subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the stack, which stops the emulator last
            )
            if self._wait_ready(timeout):
                return self.endpoint_url
            self.stop()
            if self._requested_port:
                break
        raise EmulatorError(f"moto server did not start on {self._host}:{self.port}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://{self._host}:{self.port}/moto-api/", timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Its state lives in memory and goes with it: killed at once, no teardown to wait for."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait()
