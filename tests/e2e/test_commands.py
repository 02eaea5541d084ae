"""`upscaler local up` as a user runs it (one JSON line, uploads processed, Ctrl-C), and `upscaler demo`."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def _jpeg(size: tuple[int, int]) -> bytes:
    img = Image.new("RGB", size)
    img.putdata([(x * 11 % 256, y * 13 % 256, 128) for y in range(size[1]) for x in range(size[0])])
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=70)
    return buf.getvalue()


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not box:
        process.kill()
        raise AssertionError(f"`local up` printed nothing in {timeout}s")
    return box[0]


def test_local_up_serves_plain_clients_and_stops_on_ctrl_c(tmp_path: Path, wait: Any) -> None:
    stderr = (tmp_path / "stderr.txt").open("w")
    # the real worker, started exactly as the container command starts it
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "local", "up", "--workers", "1"],
                               stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        info = json.loads(_first_line(process, timeout=60))
        for field in ("endpoint_url", "region", "input_bucket", "output_bucket", "upload_prefix", "topic_arn",
                      "jobs_table"):
            assert info[field], field
        # A plain boto3 client, knowing nothing but the printed line (any credentials work).
        s3 = boto3.client("s3", endpoint_url=info["endpoint_url"], region_name=info["region"],
                          aws_access_key_id="x", aws_secret_access_key="x")
        s3.put_object(Bucket=info["input_bucket"], Key=f"{info['upload_prefix']}cli.jpg", Body=_jpeg((24, 16)),
                      Metadata={"model": "animevideov3"})
        outputs = wait(lambda: s3.list_objects_v2(Bucket=info["output_bucket"]).get("Contents"), timeout=90,
                       what="the output object")
        body = s3.get_object(Bucket=info["output_bucket"], Key=outputs[0]["Key"])["Body"].read()
        assert Image.open(io.BytesIO(body)).size == (96, 64)
    finally:
        process.send_signal(signal.SIGINT)
        rc = process.wait(timeout=60)
        stderr.close()
    assert rc == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert process.stdout.read() == ""  # type: ignore[union-attr]  # exactly one line on stdout
    port = int(info["endpoint_url"].rsplit(":", 1)[1])

    def closed() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) != 0
    wait(closed, timeout=10, what="the emulator to go down with it")


def test_demo_end_to_end(tmp_path: Path) -> None:
    from local_stack.demo import run_demo

    photo = tmp_path / "small.jpg"
    photo.write_bytes(_jpeg((40, 30)))
    out = tmp_path / "out"
    assert run_demo(image=photo, model="animevideov3", out_dir=out, timeout=120) == 0
    [result] = [p for p in out.glob("*-small.jpg") if not p.name.startswith("input-")]  # the downloaded output
    assert Image.open(result).size == (160, 120)
    comparison = Image.open(out / "small-before-after.png")
    assert comparison.size == (160 * 2 + 8, 120 + 28)
