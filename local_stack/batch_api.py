"""The local Batch stand-in's API on 127.0.0.1: what `common.worker_backends.LocalWorkerBackend` calls.

POST /v1/submitjob {jobName, environment} -> {jobId}; /v1/terminatejob {jobId, reason} -> {};
/v1/describejobs {jobs: [...]} -> {jobs: [{jobId, status, instanceId, ...}]}: Batch's calls, cut to what the
scaler uses. A malformed request gets a 400 with the reason; nothing reaches the jobs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

from local_stack.http_server import BackgroundHttpServer

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024


class BatchService(Protocol):
    """What the API serves (local_stack.batch.LocalBatch; tests pass a recorder)."""

    def submit(self, job_name: str, environment: Mapping[str, str]) -> str: ...

    def terminate(self, job_id: str, reason: str) -> None: ...

    def describe(self, job_ids: Sequence[str]) -> list[dict[str, Any]]: ...


class LocalBatchApi:
    def __init__(self, batch: BatchService, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._batch = batch
        self._server = BackgroundHttpServer(self._handler_class(), host=host, port=port, name="local-batch-api")

    @property
    def url(self) -> str:
        return self._server.base_url

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def _actions(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        batch = self._batch

        def submit(body: dict[str, Any]) -> dict[str, Any]:
            environment = body.get("environment") or {}
            if not isinstance(environment, dict):
                raise ValueError("environment must be an object")
            return {"jobId": batch.submit(str(body.get("jobName") or "worker"), environment)}

        def terminate(body: dict[str, Any]) -> dict[str, Any]:
            batch.terminate(str(body["jobId"]), str(body.get("reason") or "terminated"))
            return {}

        def describe(body: dict[str, Any]) -> dict[str, Any]:
            jobs = body.get("jobs")
            if not isinstance(jobs, list):
                raise ValueError("jobs must be a list of job ids")
            return {"jobs": batch.describe([str(j) for j in jobs])}

        return {"/v1/submitjob": submit, "/v1/terminatejob": terminate, "/v1/describejobs": describe}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        actions = self._actions()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                action = actions.get(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                if action is None or length > MAX_BODY_BYTES:
                    self._reply(404 if action is None else 413, {"message": "no such action or body too large"})
                    return
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                    if not isinstance(body, dict):
                        raise ValueError("the body must be a JSON object")
                    self._reply(200, action(body))
                except (ValueError, KeyError, TypeError) as exc:
                    self._reply(400, {"message": f"{type(exc).__name__}: {exc}"})
                except RuntimeError as exc:  # stopping
                    self._reply(503, {"message": str(exc)})

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("local batch api: " + format, *args)

        return Handler
