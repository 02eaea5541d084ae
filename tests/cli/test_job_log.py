"""`upscaler local up`'s human log: one line per job state change, each carrying the job's story so far."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from PIL import Image

from local_stack.job_log import JobLog, TableWatcher
from local_stack.receiver import WebhookReceiver

CLOCK = lambda: datetime(2026, 12, 7, 12, 1, 3)  # noqa: E731


def test_each_state_change_is_one_line_with_the_story_so_far() -> None:
    out = io.StringIO()
    job_log = JobLog(out, upload_prefix="uploads/", clock=CLOCK)
    base = {"job_id": "j1", "input_key": "uploads/coffee.jpg"}
    job_log.observe({**base, "state": "ACCEPTED"})
    job_log.observe({**base, "state": "ACCEPTED"})  # unchanged: no line
    job_log.observe({**base, "state": "RUNNING", "worker": {"slot": "1", "host": "h"}})
    job_log.observe({**base, "state": "SUCCEEDED", "durations": {"inference": 3.21, "total": 4.0}})
    job_log.observe({**base, "state": "RUNNING"})  # a read older than the terminal state: ignored
    job_log.delivered("http://127.0.0.1:9000/hook", json.dumps({"job_id": "j1", "event_type": "upscale.succeeded"}))
    assert out.getvalue().splitlines() == [
        "12:01:03 coffee.jpg accepted",
        "12:01:03 coffee.jpg accepted -> running (worker 1)",
        "12:01:03 coffee.jpg accepted -> running (worker 1) -> succeeded 3.2 s",
        "12:01:03 coffee.jpg accepted -> running (worker 1) -> succeeded 3.2 s -> webhook delivered",
    ]


def test_a_delivery_seen_before_the_table_shows_the_end_tells_the_end_first() -> None:
    """The webhook can be faster than the table poll: the notification itself says how the job ended."""
    out = io.StringIO()
    job_log = JobLog(out, upload_prefix="uploads/", clock=CLOCK)
    base = {"job_id": "j2", "input_key": "uploads/tea.png"}
    job_log.observe({**base, "state": "RUNNING", "worker": {"slot": "0"}})
    job_log.delivered("http://h/hook", json.dumps({"job_id": "j2", "event_type": "upscale.succeeded",
                                                    "durations": {"inference": 1.04}}))
    job_log.observe({**base, "state": "SUCCEEDED", "durations": {"inference": 1.04}})  # the poll catches up: quiet
    assert out.getvalue().splitlines() == [
        "12:01:03 tea.png running (worker 0)",
        "12:01:03 tea.png running (worker 0) -> succeeded 1.0 s -> webhook delivered"]


def test_refusals_failures_and_records_that_are_not_jobs() -> None:
    out = io.StringIO()
    job_log = JobLog(out, upload_prefix="uploads/", clock=CLOCK)
    job_log.observe({"job_id": "j2", "input_key": "uploads/a/notes.jpg", "state": "REJECTED",
                     "error_code": "UNSUPPORTED_FORMAT"})
    job_log.observe({"job_id": "j3", "input_key": "uploads/x.png", "state": "AWAITING_UPLOAD"})
    job_log.observe({"job_id": "slot#1", "holder": "w"})  # a worker slot, not a job
    job_log.observe({"job_id": "j4", "state": "SOMETHING_NEW"})  # a state this log does not know yet
    assert out.getvalue().splitlines() == ["12:01:03 a/notes.jpg rejected (UNSUPPORTED_FORMAT)",
                                           "12:01:03 x.png awaiting upload"]


def test_the_watcher_reads_the_jobs_table() -> None:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        from common.jobs import table_definition

        ddb.create_table(**table_definition("jobs"))
        ddb.put_item(TableName="jobs", Item={"job_id": {"S": "j1"}, "state": {"S": "SUCCEEDED"},
                                             "input_key": {"S": "uploads/coffee.jpg"},
                                             "durations": {"M": {"inference": {"N": "3.2"}}}})
        out = io.StringIO()
        TableWatcher(JobLog(out, upload_prefix="uploads/", clock=CLOCK), dynamodb=ddb, table="jobs").poll()
    assert out.getvalue() == "12:01:03 coffee.jpg succeeded 3.2 s\n"


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.slow
def test_local_up_prints_one_human_line_per_change_and_keeps_json_in_the_file(tmp_path: Path) -> None:
    receiver = WebhookReceiver().start()
    stderr_path, log_file = tmp_path / "stderr.txt", tmp_path / "local.log"
    stderr = stderr_path.open("w")
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "local", "up", "--workers", "1", "--webhook",
                                receiver.url, "--log-file", str(log_file)],
                               stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(90)
        info = json.loads(box[0])
        s3 = boto3.client("s3", endpoint_url=info["endpoint_url"], region_name=info["region"],
                          aws_access_key_id="x", aws_secret_access_key="x")
        photo = io.BytesIO()
        Image.new("RGB", (24, 16), (200, 100, 50)).save(photo, "JPEG")
        s3.put_object(Bucket=info["input_bucket"], Key=f"{info['upload_prefix']}coffee.jpg", Body=photo.getvalue(),
                      Metadata={"model": "animevideov3"})
        line = _wait(lambda: next((ln for ln in stderr_path.read_text().splitlines() if "webhook delivered" in ln),
                                  None), 120, "the webhook delivered line")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        stderr.close()
        receiver.stop()
    assert " coffee.jpg " in line and "succeeded" in line and "-> webhook delivered" in line
    human = [ln for ln in stderr_path.read_text().splitlines() if " coffee.jpg " in ln]
    assert len(human) == len({ln.split(" ", 1)[1] for ln in human})  # one line per change, none repeated
    assert not [ln for ln in stderr_path.read_text().splitlines() if ln.startswith("{")]  # no JSON on stderr
    assert any(ln.startswith("{") for ln in log_file.read_text().splitlines())  # the JSON logs are in the file
