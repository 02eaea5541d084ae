"""`python -m gpu_batch.worker` as Batch and the local stack start it: a real process, real engine, moto server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests
from fake_engine import image_bytes
from moto.server import ThreadedMotoServer
from pipeline_world import make_pipeline_world

from common import aws
from common.contract import ENV_WORKER_SLOT, ENV_WORKER_TOKEN, WORKER_MODULE, JobState
from common.scaling import WorkerSlots

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def worker(env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("UPSCALER_", "AWS_"))}
    return subprocess.run([sys.executable, "-m", WORKER_MODULE], env={**base, **CREDENTIALS, **env}, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_bad_environment_exits_1():
    proc = worker({"UPSCALER_MAX_ATTEMPTS": "many"}, timeout=120)
    assert proc.returncode == 1
    log = json.loads(proc.stdout.strip().splitlines()[-1])
    assert log["level"] == "ERROR" and "UPSCALER_MAX_ATTEMPTS" in log["error"]


@pytest.mark.slow
def test_worker_process_drains_the_queue_with_the_real_engine_then_exits(moto_endpoint, monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    aws.clear_cache()
    world = make_pipeline_world(endpoint_url=moto_endpoint, jobs_table="jobs-entrypoint",
                                input_bucket="in-entrypoint", output_bucket="out-entrypoint")
    fast = {"model": "animevideov3", "scale": "2"}
    good = [world.upload(f"uploads/tiny{i}.png", image_bytes(32, 24), fast) for i in range(2)]
    bad = world.upload("uploads/bad.png", b"\x89PNG\r\n\x1a\n" + bytes(200), fast)
    for event in good:
        world.run_intake(event)
    # an undecodable file that passed intake (as if it was damaged after): the worker's own failure
    world.raw_store.create(job_id="job-bad", dedupe="d-bad", input_bucket=bad.bucket, input_key=bad.key)
    from common.contract import JobOptions, OutputFormat, WorkItem
    world.lifecycle.enqueue(WorkItem(
        job_id="job-bad", input_bucket=bad.bucket, input_key=bad.key, input_version=bad.version_id,
        output_bucket=world.settings.output_bucket, output_key="outputs/bad.png",
        options=JobOptions(model="animevideov3", scale=2.0, output_format=OutputFormat.PNG)), world.queue.send)
    slots = WorkerSlots(world.raw_store)
    token = slots.acquire(7, grace_seconds=60)  # intake's fake starter holds the first slots
    assert token is not None
    env = {**world.settings.replace(worker_idle_seconds=2).to_env(), ENV_WORKER_SLOT: "7", ENV_WORKER_TOKEN: token,
           "UPSCALER_LOG_LEVEL": "INFO", "AWS_BATCH_JOB_ID": "batch-job-1"}

    proc = worker(env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    logs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert logs[0]["message"] == "worker starting" and logs[0]["batch_job_id"] == "batch-job-1"
    assert [e["model"] for e in logs if e["message"] == "model loaded"] == ["animevideov3"]
    assert any(e["message"] == "inference progress" for e in logs)
    (exiting,) = [e for e in logs if e["message"] == "worker exiting"]
    assert (exiting["reason"], exiting["items"], exiting["done"]) == ("idle", 3, 3)
    assert all(world.record(e).state is JobState.SUCCEEDED for e in good)
    notes = {n["payload"]["job_id"]: n["payload"] for n in world.notifications()}
    assert notes["job-bad"]["error"]["code"] == "UNDECODABLE_IMAGE"
    payload = notes[world.job_id(good[0])]
    assert (payload["output"]["width"], payload["output"]["height"]) == (64, 48)
    fetched = requests.get(payload["presigned_url"], timeout=30)  # a real HTTP GET against the emulator
    assert fetched.status_code == 200 and fetched.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert slots.all(8)[-1].status == "FREE"
    aws.clear_cache()
