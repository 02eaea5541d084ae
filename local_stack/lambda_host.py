"""The child side of LambdaRuntime: `python -m local_stack.lambda_host module:function`.

Imports the handler (the init phase), then serves invocations: one JSON request per line on stdin,
one JSON response per line on a private copy of stdout. The handler's own prints and logs go to
stderr, like a Lambda's go to CloudWatch.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import traceback
from typing import Any

from local_stack.lambda_context import LocalLambdaContext


def main(handler_path: str) -> None:
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the stack, which then closes this host
    module_name, _, attr = handler_path.partition(":")
    try:
        handler = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:
        _reply(protocol, {"init_error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})
        return
    _reply(protocol, {"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        context = LocalLambdaContext(**request["context"])
        try:
            response: dict[str, Any] = {"result": handler(request["event"], context)}
            text = json.dumps(response)
        except Exception as exc:
            text = json.dumps({"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})
        protocol.write(text + "\n")
        protocol.flush()


def _reply(protocol: Any, payload: dict[str, Any]) -> None:
    protocol.write(json.dumps(payload) + "\n")
    protocol.flush()


if __name__ == "__main__":
    main(sys.argv[1])
