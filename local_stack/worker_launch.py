"""How the local job queue starts a worker attempt: spawn `python -m gpu_batch.worker`, or fork it from a
pre-warmed template (local_stack.worker_zygote). Both give a separate process with the job's environment."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Protocol

from common.contract import WORKER_MODULE
from local_stack.json_child import ChildExited, JsonLinesChild


class WorkerHandle(Protocol):
    pid: int

    def lines(self) -> Iterator[str]:
        """The worker's stdout and stderr, line by line, until it exits."""
        ...

    def wait(self, timeout: float | None = None) -> int:
        """Exit code (negative: killed by that signal). Raises subprocess.TimeoutExpired."""
        ...

    def poll(self) -> int | None: ...


class WorkerLauncher(Protocol):
    def launch(self, env: Mapping[str, str]) -> WorkerHandle: ...

    def close(self) -> None: ...


# --- spawn: exactly the container's command ---------------------------------------------------
class _SpawnedWorker:
    def __init__(self, command: Sequence[str], env: Mapping[str, str]) -> None:
        # A session of its own: Ctrl-C in the terminal reaches the stack, which then stops the workers.
        self._process = subprocess.Popen(list(command), env=dict(env), stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self._process.pid

    def lines(self) -> Iterator[str]:
        assert self._process.stdout is not None
        with self._process.stdout:
            for raw in self._process.stdout:
                yield raw.decode("utf-8", "replace").rstrip("\n")

    def wait(self, timeout: float | None = None) -> int:
        return self._process.wait(timeout)

    def poll(self) -> int | None:
        return self._process.poll()


class SpawnLauncher:
    def __init__(self, command: Sequence[str] | None = None) -> None:
        self._command = list(command) if command else [sys.executable, "-m", WORKER_MODULE]

    def launch(self, env: Mapping[str, str]) -> WorkerHandle:
        return _SpawnedWorker(self._command, env)

    def close(self) -> None:
        pass


# --- prefork: a fresh process per attempt, forked from a warm template --------------------------
class _Zygote(JsonLinesChild):
    def __init__(self, env: Mapping[str, str], log: IO[str] | None) -> None:
        super().__init__([sys.executable, "-m", "local_stack.worker_zygote"], env, log)
        if self._read() != {"ready": True}:
            raise RuntimeError("worker template failed to start")

    def _read(self) -> dict[str, object]:
        try:
            return self.read()
        except ChildExited as exc:
            raise RuntimeError(f"worker template {exc}") from exc


class _ForkedWorker:
    def __init__(self, zygote: _Zygote, env: Mapping[str, str], release: queue.Queue[_Zygote | None]) -> None:
        self._zygote = zygote
        self._release = release
        self._code: int | None = None
        self._done = threading.Event()
        zygote.send({"env": dict(env)})
        self.pid = int(zygote._read()["pid"])  # type: ignore[call-overload]

    def lines(self) -> Iterator[str]:
        try:
            while True:
                message = self._zygote._read()
                if "log" in message:
                    yield str(message["log"])
                elif "exit" in message:
                    self._code = int(message["exit"])  # type: ignore[call-overload]
                    return
        except RuntimeError:  # the template died: report the worker as crashed
            self._code = 1 if self._code is None else self._code
        finally:
            self._release.put(self._zygote if self._zygote.alive() else None)
            self._done.set()

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(WORKER_MODULE, timeout or 0)
        assert self._code is not None
        return self._code

    def poll(self) -> int | None:
        return self._code if self._done.is_set() else None


class PreforkLauncher:
    """One template per worker slot; `launch` blocks only while all templates are busy."""

    def __init__(self, *, env: Mapping[str, str], slots: int, log: IO[str] | None = None) -> None:
        self._env = dict(env)
        self._log = log
        self._idle: queue.Queue[_Zygote | None] = queue.Queue()
        self._all: list[_Zygote] = []
        self._lock = threading.Lock()
        for _ in range(slots):
            self._idle.put(None)  # started on first use, or by warm()

    def warm(self) -> None:
        zygote = self._idle.get()
        self._idle.put(zygote if zygote is not None and zygote.alive() else self._start())

    def _start(self) -> _Zygote:
        zygote = _Zygote(self._env, self._log)
        with self._lock:
            self._all.append(zygote)
        return zygote

    def launch(self, env: Mapping[str, str]) -> WorkerHandle:
        zygote = self._idle.get()
        try:
            if zygote is None or not zygote.alive():
                zygote = self._start()
            return _ForkedWorker(zygote, env, self._idle)
        except BaseException:
            self._idle.put(zygote if zygote is not None and zygote.alive() else None)
            raise

    def close(self) -> None:
        with self._lock:
            zygotes, self._all = self._all, []
        for zygote in zygotes:
            zygote.request_exit()
        for zygote in zygotes:
            zygote.close()


def signal_worker(handle: WorkerHandle, sig: int = signal.SIGKILL) -> bool:
    if handle.poll() is not None:
        return False
    try:
        os.kill(handle.pid, sig)
    except ProcessLookupError:
        return False
    return True
