"""`python -m gpu_batch.worker` as Batch and the local runner start it: a real process, real engine, moto server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests
from moto.server import ThreadedMotoServer

from common import aws
from common.contract import BATCH_ATTEMPT_ENV, EXIT_OK, EXIT_PERMANENT_FAILURE, WORKER_MODULE, JobState
from common.settings import Settings

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


def test_bad_environment_exits_1_for_the_notifier_to_handle():
    proc = worker({"UPSCALER_JOB_ID": "j"}, timeout=120)
    assert proc.returncode == 1
    log = json.loads(proc.stdout.strip().splitlines()[-1])
    assert log["level"] == "ERROR" and "UPSCALER_JOB_INPUT_BUCKET" in log["error"]


@pytest.mark.slow
def test_worker_process_upscales_with_the_real_engine(moto_endpoint, monkeypatch, world_factory, kit):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    world = world_factory(Settings.from_env({}, endpoint_url=moto_endpoint, jobs_table="jobs-entrypoint",
                                            input_bucket="in-entrypoint", output_bucket="out-entrypoint"))
    params = world.submitted_job("job-real", "uploads/tiny.png", kit.image(32, 24))
    env = {**world.settings.to_env(), **params.to_environment(), BATCH_ATTEMPT_ENV: "1",
           "UPSCALER_LOG_LEVEL": "INFO", "AWS_BATCH_JOB_ID": "batch-job-1"}

    proc = worker(env)
    assert proc.returncode == EXIT_OK, proc.stdout[-3000:] + proc.stderr[-3000:]

    logs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert logs and all(entry.get("job_id") == "job-real" for entry in logs)
    assert logs[0]["message"] == "worker starting" and logs[0]["batch_job_id"] == "batch-job-1"
    upscaled = next(e for e in logs if e["message"] == "upscaled")
    assert upscaled["provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert any(e["message"] == "inference progress" for e in logs)
    assert world.store.get("job-real").state is JobState.SUCCEEDED
    notes = world.notifications()
    assert [n["payload"]["event_type"] for n in notes] == ["upscale.succeeded"]
    payload = notes[0]["payload"]
    assert (payload["output"]["width"], payload["output"]["height"]) == (64, 48)
    # a real HTTP GET of the presigned URL against the emulator
    fetched = requests.get(payload["presigned_url"], timeout=30)
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "image/png"
    assert fetched.content[:8] == b"\x89PNG\r\n\x1a\n"

    # A second delivery of the same job (Batch retry after the fact): nothing redone, nothing sent.
    proc = worker({**env, BATCH_ATTEMPT_ENV: "2"})
    assert proc.returncode == EXIT_OK and world.notifications() == []

    # An undecodable input through the real engine: permanent, exit 2, one upscale.failed.
    bad = world.submitted_job("job-real-bad", "uploads/bad.png", b"\x89PNG\r\n\x1a\nnope")
    proc = worker({**world.settings.to_env(), **bad.to_environment(), BATCH_ATTEMPT_ENV: "1"})
    assert proc.returncode == EXIT_PERMANENT_FAILURE
    assert [n["payload"]["error"]["code"] for n in world.notifications()] == ["UNDECODABLE_IMAGE"]
    aws.clear_cache()
