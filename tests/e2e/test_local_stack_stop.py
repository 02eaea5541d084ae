"""Stopping the local stack (Ctrl-C on `upscaler local up`) with an idle worker: the worker is asked with SIGTERM
and leaves on its own, and nothing alarming is printed for an expected shutdown."""

from __future__ import annotations

import io

import pytest

from common import aws
from local_stack.faults.runner import image
from local_stack.receiver import WebhookReceiver
from local_stack.stack import LocalStack, LocalStackConfig

pytestmark = pytest.mark.slow


def test_stop_with_an_idle_worker_lets_it_leave_on_sigterm_quietly(receiver: WebhookReceiver) -> None:
    from gpu_batch.engine.models import ensure_model

    ensure_model("animevideov3")
    log = io.StringIO()
    stack = LocalStack(LocalStackConfig(workers=1, webhooks=(receiver.url,), log_stream=log)).start()
    try:
        assert stack.webhook_subscriptions[0].confirmed.wait(30) and stack.settings is not None
        s = stack.settings
        aws.client("s3", s).put_object(Bucket=s.input_bucket, Key=f"{s.upload_prefix}stop/one.png",
                                       Body=image(0, 0, (32, 32)), Metadata={"model": "animevideov3"})
        receiver.wait_for(lambda p: p["input"]["key"].endswith("stop/one.png"), timeout=180)
        batch = stack.batch
        assert batch is not None
        (worker,) = batch.running()  # idle now, in its receive long poll (worker_idle_seconds: 60)
    finally:
        stack.stop()
    assert worker.exit_code == 0 and worker.summary.get("reason") == "stop signal"  # its own exit, no SIGKILL
    assert "killed by signal" not in log.getvalue()
