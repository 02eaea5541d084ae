"""A long-lived child process spoken to in JSON lines: requests on stdin, replies on stdout.

The Lambda execution environments are such children. EOF on
stdin asks the child to finish what it is doing and exit.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from typing import IO, Any


class ChildExited(RuntimeError):
    """The child closed its stdout (it exited or crashed)."""


class JsonLinesChild:
    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: IO[str] | None) -> None:
        # A session of its own: Ctrl-C in the terminal reaches the stack, which then stops its children.
        self.process = subprocess.Popen(list(argv), env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=log, text=True, start_new_session=True)

    def send(self, message: Mapping[str, Any]) -> None:
        stdin: IO[str] = self.process.stdin  # type: ignore[assignment]
        stdin.write(json.dumps(message) + "\n")
        stdin.flush()

    def read(self) -> dict[str, Any]:
        stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        line = stdout.readline()
        if not line:
            raise ChildExited(f"exited with code {self.process.wait()}")
        return dict(json.loads(line))

    def alive(self) -> bool:
        return self.process.poll() is None

    def request_exit(self) -> None:
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()

    def close(self) -> None:
        self.request_exit()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
