"""`upscaler local up` and `upscaler demo`."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

local_app = typer.Typer(help="Run the whole pipeline on this machine (moto emulator, real handlers and worker).",
                        no_args_is_help=True)


def _logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
    log_level: Annotated[str, typer.Option(help="Log level of the local stack itself (stderr).")] = "INFO",
) -> None:
    """Start the local stack; print one JSON line (endpoint, names) on stdout; run until Ctrl-C."""
    from local_stack.stack import LocalStack, LocalStackConfig, deployed_shape

    _logging(log_level)
    policy = json.loads(filter_policy) if filter_policy else None
    mapping = None
    if batch_window is not None:
        mapping = dataclasses.replace(deployed_shape().mapping, batching_window_seconds=batch_window)
    stack = LocalStack(LocalStackConfig(workers=workers, batch_delay=batch_delay, port=port,
                                        webhooks=tuple(webhook or ()), filter_policy=policy, mapping=mapping))
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stack.start()
        print(json.dumps(stack.info(), sort_keys=True), flush=True)
        logging.getLogger("local_stack").info(
            "local stack up in %.1fs; try: aws --endpoint-url %s s3 cp photo.jpg s3://%s/%s",
            stack.started_seconds, stack.emulator.endpoint_url, stack.settings.input_bucket,  # type: ignore[union-attr]
            stack.settings.upload_prefix)  # type: ignore[union-attr]
        stopping.wait()
    finally:
        print("stopping the local stack...", file=sys.stderr, flush=True)
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
