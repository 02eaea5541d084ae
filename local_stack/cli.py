"""`upscaler local up` and `upscaler demo`.

`local up` prints one JSON line on stdout (endpoint and names), then one human line per job state change on
stderr (local_stack/job_log.py); the handlers' and workers' JSON logs go to a file, or with `--json-logs`
to stderr instead of the human lines.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import IO, Annotated

import typer

local_app = typer.Typer(help="Run the whole pipeline on this machine (moto emulator, real handlers and worker).",
                        no_args_is_help=True)


def _logging(level: str, stream: IO[str] = sys.stderr) -> None:
    logging.basicConfig(stream=stream, level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def default_log_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "upscaler" / "local-up.log"


@local_app.command("up")
def up(
    webhook: Annotated[list[str] | None, typer.Option(
        "--webhook", help="Subscribe this http(s) URL to the topic (repeatable). SNS-style delivery.")] = None,
    filter_policy: Annotated[str | None, typer.Option(
        help='SNS filter policy (JSON) for the --webhook subscriptions, e.g. \'{"event_type": '
             '["upscale.succeeded"]}\'')] = None,
    workers: Annotated[int, typer.Option(
        min=1, help="max_workers: GPU worker jobs running (or being placed) at once.")] = 2,
    batch_delay: Annotated[float, typer.Option(
        min=0, help="Seconds Batch takes to place each worker job (instance, image pull, container start).")] = 0.0,
    port: Annotated[int, typer.Option(help="Emulator port on 127.0.0.1 (0: a free one).")] = 0,
    batch_window: Annotated[float | None, typer.Option(
        help="Intake batching window in seconds (default: the deployed one from cdk.json).")] = None,
    log_level: Annotated[str, typer.Option(help="Log level of the local stack itself.")] = "INFO",
    json_logs: Annotated[bool, typer.Option(
        "--json-logs", help="The handlers' and workers' JSON logs on stderr, instead of one line per job change.")]
        = False,
    log_file: Annotated[Path | None, typer.Option(
        help="Where the JSON logs go without --json-logs (default: ~/.cache/upscaler/local-up.log).")] = None,
) -> None:
    """Start the local stack; print one JSON line (endpoint, names) on stdout; run until Ctrl-C.

    Then one line per job state change on stderr (12:01:03 coffee.jpg accepted -> running (worker 1) ->
    succeeded 3.2 s -> webhook delivered); the JSON logs go to --log-file, or to stderr with --json-logs."""
    from common import aws
    from local_stack.job_log import JobLog, TableWatcher
    from local_stack.stack import LocalStack, LocalStackConfig, deployed_shape

    logs: IO[str] | None = None
    if json_logs:
        _logging(log_level)
    else:
        path = log_file or default_log_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        logs = path.open("w", encoding="utf-8")
        _logging(log_level, logs)
    policy = json.loads(filter_policy) if filter_policy else None
    mapping = None
    if batch_window is not None:
        mapping = dataclasses.replace(deployed_shape().mapping, batching_window_seconds=batch_window)
    stack = LocalStack(LocalStackConfig(workers=workers, batch_delay=batch_delay, port=port,
                                        webhooks=tuple(webhook or ()), filter_policy=policy, mapping=mapping,
                                        log_stream=logs))
    watcher: TableWatcher | None = None
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stack.start()
        settings = stack.settings
        assert settings is not None and stack.webhooks is not None
        print(json.dumps(stack.info(), sort_keys=True), flush=True)
        where = "here" if logs is None else f"in {logs.name} (--json-logs: here)"
        print(f"local stack up in {stack.started_seconds:.1f}s; JSON logs {where}. Try: aws --endpoint-url "
              f"{stack.emulator.endpoint_url} s3 cp photo.jpg s3://{settings.input_bucket}/{settings.upload_prefix}",
              file=sys.stderr, flush=True)
        if logs is not None:
            job_log = JobLog(sys.stderr, upload_prefix=settings.upload_prefix)
            stack.webhooks.delivered_listeners.append(job_log.delivered)
            watcher = TableWatcher(job_log, dynamodb=aws.client("dynamodb", settings),
                                   table=settings.jobs_table).start()
        stopping.wait()
    finally:
        print("stopping the local stack...", file=sys.stderr, flush=True)
        if watcher is not None:
            watcher.stop()
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if logs is not None:
            logs.close()


def demo(
    image: Annotated[Path | None, typer.Argument(
        exists=True, dir_okay=False, help="Photo to upscale (default: scikit-image's coffee, degraded).")] = None,
    model: Annotated[str | None, typer.Option(
        help="A model name (default x4plus; `upscaler models list`; which for what: docs/models.md).")] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the result and the side-by-side go.")] = Path("out"),
    width: Annotated[int | None, typer.Option(
        help="Width the sample photo is shrunk to when no IMAGE is given (default 256).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the webhook.")] = 600.0,
) -> None:
    """Run the main job end to end on this machine: upload a photo, get the webhook, see before/after."""
    from local_stack.demo import run_demo

    _logging("WARNING")
    raise typer.Exit(run_demo(image=image, model=model, out_dir=out_dir, width=width, timeout=timeout))
