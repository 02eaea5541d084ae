"""`upscaler submit`: one photo through the HTTP API: create the job, upload it, and with --wait follow it and
download the result (rich progress on stderr; the job id, and the result's path, on stdout)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from common.contract import TERMINAL_STATES, ModelName, OutputFormat
from common.formats import EXTENSIONS

if TYPE_CHECKING:  # requests (the local extra) is imported when the command runs: the worker image has no use for it
    from cli.api_client import ApiClient

err = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)
POLL_SECONDS = (0.5, 1.0, 1.0, 2.0, 3.0)
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                 ".heic": "image/heic", ".heif": "image/heif", ".avif": "image/avif", ".tif": "image/tiff",
                 ".tiff": "image/tiff"}  # what the upload is labelled; intake decides the format by its bytes


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def submit(
    photo: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The photo to upscale.")],
    api_url: Annotated[str, typer.Option(envvar="UPSCALER_API_URL", help=(
        "The API's base URL: the stack output ApiUrl, or `api_url` from `upscaler local up`."))],
    model: Annotated[ModelName | None, typer.Option(
        help="Network (docs/models.md); default: the deployment's.")] = None,
    scale: Annotated[float | None, typer.Option(help="Output scale, 1 to 4 (e.g. 2.5).")] = None,
    format: Annotated[OutputFormat | None, typer.Option(help="Output format; default: follow the input.")] = None,
    strength: Annotated[float | None, typer.Option(help="The network's share, 0 to 1.")] = None,
    webhook: Annotated[str | None, typer.Option(help="An https URL told when the job ends.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job and download the result.")] = False,
    out_path: Annotated[Path | None, typer.Option("--out", help=(
        "Where --wait writes the result (default: <photo>.upscaled.<format> beside the photo)."))] = None,
    region: Annotated[str | None, typer.Option(envvar="AWS_REGION", help="The API's region (for SigV4).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits for the job to end.")] = 1800.0,
) -> None:
    """Upscale a photo through the HTTP API (SigV4 with your usual AWS credentials)."""
    import botocore.session

    from cli.api_client import ApiClient, ApiError

    session = botocore.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise _fail("no AWS credentials found (environment, profile or SSO); the API takes SigV4-signed requests")
    region = region or session.get_config_variable("region") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise _fail("no region: pass --region or set AWS_REGION")
    client = ApiClient(api_url, region=region, credentials=credentials.get_frozen_credentials())
    options = {k: v for k, v in {"model": model.value if model else None, "scale": scale,
                                 "format": format.value if format else None, "strength": strength}.items()
               if v is not None}
    request: dict[str, Any] = {"filename": photo.name, "size": photo.stat().st_size, "options": options,
                               "content_type": CONTENT_TYPES.get(photo.suffix.lower(), "application/octet-stream")}
    if webhook:
        request["webhook_url"] = webhook
    try:
        created = client.request("POST", "/v1/jobs", request)
        job_id = str(created["job_id"])
        with _progress() as bar:
            task = bar.add_task(f"uploading {photo.name}", total=request["size"])
            client.upload(created["upload"], photo, lambda done, total: bar.update(task, completed=done, total=total))
        out.print(job_id)
        if not wait:
            err.print(f"follow it: GET {created['status_url']}", highlight=False, soft_wrap=True)
            return
        job = _follow(client, job_id, timeout)
        if job["state"] != "SUCCEEDED":
            error = job.get("error") or {}
            raise _fail(f"job {job_id} {str(job['state']).lower()}: {error.get('message', '')} ({error.get('code')})")
        target = out_path or photo.with_name(
            f"{photo.stem}.upscaled{EXTENSIONS[OutputFormat(job['result']['format'])]}")
        with _progress() as bar:
            task = bar.add_task(f"downloading {target.name}", total=None)
            client.download(job["result"]["url"], target,
                            lambda done, total: bar.update(task, completed=done, total=total))
        result = job["result"]
        err.print(f"{photo.name} -> {target} ({result['width']}x{result['height']}, {job['options']['model']}, "
                  f"{job['timings']['durations'].get('total') or '?'} s)", highlight=False)
        out.print(str(target))
    except ApiError as exc:
        raise _fail(str(exc)) from None


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


def _follow(client: ApiClient, job_id: str, timeout: float) -> dict[str, Any]:
    """GET the job until it ends, showing its state; the last answer."""
    from cli.api_client import ApiError

    deadline = time.monotonic() + timeout
    terminal = {str(s) for s in TERMINAL_STATES}
    with Progress(TextColumn("[bold]{task.description}"), TimeElapsedColumn(), console=err, transient=True) as bar:
        task: TaskID = bar.add_task("")
        attempt = 0
        while True:
            job = client.request("GET", f"/v1/jobs/{job_id}")
            bar.update(task, description=f"job {job_id[:8]}: {str(job['state']).lower().replace('_', ' ')}")
            if job["state"] in terminal:
                return job
            if time.monotonic() > deadline:
                raise ApiError(0, "", f"job {job_id} is still {job['state']} after {timeout:g} s")
            time.sleep(POLL_SECONDS[min(attempt, len(POLL_SECONDS) - 1)])
            attempt += 1
