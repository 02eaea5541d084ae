"""`python -m local_stack.worker_zygote`: a template process that forks one fresh worker per job attempt.

It imports the worker's modules and builds its AWS clients once (no request made, so no socket is
shared), then for each request forks a child that takes the job's environment and runs
`gpu_batch.worker` as `__main__`, exactly as `python -m gpu_batch.worker` would. The template
itself never runs a job. Saves ~1 s of interpreter start, imports and client set-up per job.

Protocol (JSON lines): stdin {"env": {...}}; a private copy of stdout: {"pid": N}, then {"log": line}
for each line the child prints, then {"exit": code} (negative: killed by that signal).
"""

from __future__ import annotations

import io
import json
import os
import runpy
import signal
import sys
import traceback
from typing import Any

from common.contract import WORKER_MODULE


def _prepare() -> None:
    """What every worker does first, done once: imports, AWS clients, schema and codec set-up.

    Nothing here starts a thread or opens a connection, so forking afterwards is safe.
    """
    import onnxruntime  # noqa: F401
    from PIL import Image

    import gpu_batch.worker.main  # noqa: F401
    from common import aws
    from common.contract import EventType, ImageInfo, Notification, validate_notification
    from common.settings import Settings

    settings = Settings.from_env()
    for service in ("s3", "dynamodb", "sns"):
        aws.client(service, settings)
    Image.init()  # registers every codec plugin (Pillow does it lazily on first open)
    # The first validation loads the JSON Schema metaschemas (~0.2 s); later ones reuse them.
    validate_notification(Notification(event_type=EventType.SUCCEEDED, job_id="warm-up",
                                       input=ImageInfo(bucket="b", key="k"), output=ImageInfo(bucket="b", key="o"),
                                       presigned_url="http://warm.up/").to_dict())


def _run_child(env: dict[str, str], write_fd: int) -> None:
    """In the forked child: become the worker. Never returns."""
    code = 1
    try:
        os.setsid()  # its own session, like the spawned worker: signals to the stack do not reach it
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        # Fresh stream objects: the template's may hold buffered state or locks from before the fork.
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = [WORKER_MODULE]
        runpy.run_module(WORKER_MODULE, run_name="__main__", alter_sys=True)  # its __main__ os._exit()s
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _send(protocol: Any, payload: dict[str, Any]) -> None:
    protocol.write(json.dumps(payload) + "\n")
    protocol.flush()


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything the template prints must not corrupt the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _prepare()
    _send(protocol, {"ready": True})
    for line in sys.stdin:
        env = json.loads(line)["env"]
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            protocol.close()
            _run_child(env, write_fd)
        os.close(write_fd)
        _send(protocol, {"pid": pid})
        with os.fdopen(read_fd, "rb") as output:
            for raw in output:
                _send(protocol, {"log": raw.decode("utf-8", "replace").rstrip("\n")})
        _, status = os.waitpid(pid, 0)
        _send(protocol, {"exit": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    main()
