"""The HTTP API end to end through the local stack: SigV4 requests to the local API server, the presigned POST
to the local S3 (which checks its policy), the real intake, worker, notifications and per-request webhook
delivery; `upscaler submit`; the web page in a real headless Chromium.

One stack for the module. Its Batch stand-in places a worker 20 s after it is asked for one, so the first
job stays QUEUED long enough to be cancelled before any worker can take it (the cancel test runs first).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.credentials import Credentials
from hook_server import HookServer
from PIL import Image
from standardwebhooks.webhooks import Webhook

from cli.api_client import ApiClient, ApiError
from common import aws
from common.contract import JobState
from common.jobs import JobStore
from local_stack.receiver import WebhookReceiver
from local_stack.stack import DUMMY_CREDENTIALS, LocalStack, LocalStackConfig, queue_depth

pytestmark = pytest.mark.slow

PLACEMENT_SECONDS = 20.0
FAST = {"model": "animevideov3", "scale": 2}
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "web-before-after.png"


@pytest.fixture(scope="module")
def stack(receiver: WebhookReceiver, quick: dict[str, Any]) -> Iterator[LocalStack]:
    from gpu_batch.engine.models import ensure_model

    ensure_model("animevideov3")  # built once and cached; workers must not race to build it
    config = LocalStackConfig(workers=1, batch_delay=PLACEMENT_SECONDS, webhooks=(receiver.url,), **quick)
    with LocalStack(config) as running:
        assert running.webhook_subscriptions[0].confirmed.wait(10), "webhook not confirmed"
        yield running


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> ApiClient:
    assert stack.api_server is not None and stack.settings is not None
    return ApiClient(stack.api_server.url, region=stack.settings.region, credentials=Credentials(
        DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"], DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]))


def photo(path: Path, size: tuple[int, int] = (48, 32)) -> Path:
    Image.linear_gradient("L").resize(size).convert("RGB").save(path, "PNG")
    return path


def create(client: ApiClient, image: Path, **extra: Any) -> dict[str, Any]:
    return client.request("POST", "/v1/jobs", {"filename": image.name, "content_type": "image/png",
                                               "size": image.stat().st_size, "options": FAST, **extra})


def state_of(client: ApiClient, job_id: str) -> dict[str, Any]:
    return client.request("GET", f"/v1/jobs/{job_id}")


def test_a_job_cancelled_before_a_worker_takes_it_ends_with_one_cancelled_notification(
        stack: LocalStack, client: ApiClient, receiver: WebhookReceiver, tmp_path: Path,
        wait: Callable[..., Any]) -> None:
    image = photo(tmp_path / "second.png")
    created = create(client, image)
    job_id = created["job_id"]
    client.upload(created["upload"], image, lambda done, total: None)
    wait(lambda: state_of(client, job_id)["state"] == "QUEUED", timeout=PLACEMENT_SECONDS / 2,
         interval=0.2, what="intake to queue the upload")
    cancelled = client.request("DELETE", f"/v1/jobs/{job_id}")
    assert cancelled["state"] == "CANCELLED", cancelled
    [note] = receiver.wait_for(lambda p: p["job_id"] == job_id, timeout=30)
    assert note.payload["event_type"] == "upscale.cancelled"
    assert note.payload["error"]["code"] == "CANCELLED"

    # The worker placed for it finds the job terminal and drops the item: nothing else is said of this job.
    assert stack.settings is not None and stack.resources is not None
    sqs = aws.client("sqs", stack.settings)
    wait(lambda: stack.batch is not None and len(stack.batch.started()) >= 1, timeout=PLACEMENT_SECONDS * 3,
         what="the worker to be placed")
    wait(lambda: queue_depth(sqs, stack.resources.work_queue_url) == 0, timeout=60,  # type: ignore[union-attr]
         what="the worker to drop the cancelled item")
    copies = receiver.for_job(job_id)
    assert {c.payload["event_type"] for c in copies} == {"upscale.cancelled"}
    assert len({c.payload["event_id"] for c in copies}) == 1
    assert state_of(client, job_id)["state"] == "CANCELLED"


def test_a_job_with_a_webhook_succeeds_links_its_result_and_calls_its_webhook(
        stack: LocalStack, client: ApiClient, receiver: WebhookReceiver, tmp_path: Path,
        wait: Callable[..., Any]) -> None:
    image = photo(tmp_path / "first photo.png")
    with HookServer() as hook:
        created = create(client, image, webhook_url=hook.url(), webhook_events=["upscale.succeeded", "upscale.failed"])
        job_id = created["job_id"]
        assert created["status_url"] == f"{client.base_url}/v1/jobs/{job_id}"
        client.upload(created["upload"], image, lambda done, total: None)
        job = wait(lambda: (j := state_of(client, job_id))["state"] in ("SUCCEEDED", "FAILED", "REJECTED") and j,
                   timeout=PLACEMENT_SECONDS + 120, interval=0.5, what="the job to end")
        assert job["state"] == "SUCCEEDED", job
        assert job["webhook"] == {"url": hook.url(), "events": ["upscale.failed", "upscale.succeeded"]}
        assert (job["input"]["width"], job["input"]["height"]) == (48, 32)
        download = requests.get(job["result"]["url"], timeout=10)
        assert download.status_code == 200
        with Image.open(io.BytesIO(download.content)) as result:
            assert result.size == (96, 64) == (job["result"]["width"], job["result"]["height"])
        [note] = receiver.wait_for(lambda p: p["job_id"] == job_id, timeout=30)  # the SNS subscription
        assert note.payload["event_type"] == "upscale.succeeded"
        # The job's own webhook, signed (Standard Webhooks) with the local stack's secret.
        [delivered] = hook.wait_for(1, timeout=60)
        payload = Webhook(stack.info()["webhook_secret"]).verify(delivered.body, delivered.headers)
        assert payload["job_id"] == job_id and payload["event_type"] == "upscale.succeeded"
        assert payload["event_id"] == note.payload["event_id"]
    listed = client.request("GET", "/v1/jobs?limit=100")["jobs"]
    assert job_id in [j["job_id"] for j in listed]


def test_s3_refuses_an_upload_that_breaks_the_links_policy(stack: LocalStack, client: ApiClient,
                                                           tmp_path: Path) -> None:
    image = photo(tmp_path / "policy.png")
    created = create(client, image)
    form = created["upload"]
    changed = requests.post(form["url"], data={**form["fields"], "x-amz-meta-model": "x4plus"},
                            files={"file": ("policy.png", image.read_bytes())}, timeout=10)
    assert changed.status_code == 403 and "AccessDenied" in changed.text
    larger = requests.post(form["url"], data=form["fields"],
                           files={"file": ("policy.png", image.read_bytes() + b"\0")}, timeout=10)
    assert larger.status_code == 400 and "EntityTooLarge" in larger.text
    with pytest.raises(ApiError, match="refused"):
        client.upload({**form, "fields": {**form["fields"], "x-amz-meta-scale": "4"}}, image, lambda d, t: None)
    assert stack.settings is not None
    store = JobStore(dynamodb_client=aws.client("dynamodb", stack.settings), table_name=stack.settings.jobs_table)
    assert store.get(created["job_id"]).state is JobState.AWAITING_UPLOAD  # type: ignore[union-attr]


def test_upscaler_submit_waits_and_downloads(stack: LocalStack, tmp_path: Path) -> None:
    assert stack.api_server is not None and stack.settings is not None
    image = photo(tmp_path / "cli.png", (40, 24))
    env = {**os.environ, **DUMMY_CREDENTIALS, "AWS_REGION": stack.settings.region, "NO_COLOR": "1",
           "UPSCALER_API_URL": stack.api_server.url}
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_SESSION_TOKEN", None)
    done = subprocess.run([sys.executable, "-m", "cli.main", "submit", str(image), "--model", "animevideov3",
                           "--scale", "2", "--format", "webp", "--wait"], env=env, capture_output=True, text=True,
                          timeout=PLACEMENT_SECONDS + 180, check=False)
    assert done.returncode == 0, done.stderr
    job_id, written = done.stdout.split()
    assert len(job_id) == 32 and Path(written) == tmp_path / "cli.upscaled.webp"
    with Image.open(written) as result:
        assert result.size == (80, 48) and result.format == "WEBP"
    assert "cli.png ->" in done.stderr


def test_the_page_uploads_a_photo_and_shows_the_result(stack: LocalStack, tmp_path: Path) -> None:
    from browser import launch_chromium
    from skimage import data

    assert stack.api_server is not None
    source = Image.fromarray(data.chelsea()).crop((80, 20, 320, 180)).resize((120, 80), Image.Resampling.BICUBIC)
    source.save(tmp_path / "chelsea.jpg", "JPEG", quality=55)
    with launch_chromium() as browser:
        page = browser.new_page(viewport={"width": 900, "height": 760})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(stack.api_server.url)
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        page.select_option("#model", "animevideov3")
        page.fill("#scale", "4")
        page.get_by_label("Photos to upscale").set_input_files(str(tmp_path / "chelsea.jpg"))
        job = page.locator(".job").first
        job.locator(".state").filter(has_text="done").wait_for(timeout=(PLACEMENT_SECONDS + 120) * 1000)
        after = job.locator("img.after")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=after.element_handle())
        assert after.evaluate("img => img.naturalWidth") == 480
        assert job.locator("a.download").get_attribute("href") == after.get_attribute("src")
        split = job.get_by_label("Before / after")
        split.focus()
        page.keyboard.press("Home")  # keyboard moves the slider: all "after" would be at 0
        assert split.input_value() == "0"
        split.fill("50")
        job.screenshot(path=str(tmp_path / "result.png"))
        if os.environ.get("UPSCALER_WRITE_SCREENSHOT"):
            job.screenshot(path=str(SCREENSHOT))
        assert not errors, errors
    with Image.open(tmp_path / "result.png") as shot:
        assert shot.width > 480
