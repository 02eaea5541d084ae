"""What the intake Lambda costs per upload, measured; prints one table.

  .venv/bin/python benchmarks/intake_cost.py [--skip-package] [--runs 5]

1. Validation time of a 12 MP JPEG (header + limits + full decode), pinned to one CPU like a
   1-vCPU Lambda (goal < 0.5 s).
2. Bytes read from S3 by the real intake (moto, in process; counted with a botocore event hook on
   every GetObject response) for: a 51 MB upload refused for size (goal: none beyond HEAD), a
   decompression bomb padded to 5 MB (goal < 1 MB), and the 12 MP JPEG that is accepted.
3. The Lambda package: functions/requirements.txt installed for the Lambda platform exactly as the
   CDK bundling does (infra.constructs.bundling), plus common/ and functions/, zipped.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import aws  # noqa: E402
from common.contract import JobOptions, JobParameters  # noqa: E402
from common.jobs import JobStore  # noqa: E402
from common.notify import Notifier  # noqa: E402
from common.settings import Settings  # noqa: E402
from functions.intake.intake import Intake  # noqa: E402
from functions.intake.s3_events import UploadEvent  # noqa: E402
from functions.intake.validation import read_header, validate_bytes  # noqa: E402
from local_stack.resources import create_bucket, create_jobs_table  # noqa: E402

BUCKET = "bench-input"


def twelve_mp_jpeg() -> bytes:
    """4000×3000 photo-like JPEG: smooth gradients plus fine noise, quality 90 (~3-6 MB)."""
    width, height = 4000, 3000
    base = Image.linear_gradient("L").resize((width, height))
    rgb = Image.merge("RGB", (base, base.transpose(Image.Transpose.ROTATE_180), base.rotate(90)))
    rng = random.Random(12)
    tile = Image.frombytes("RGB", (500, 500), rng.randbytes(500 * 500 * 3))
    noise = Image.new("RGB", (width, height))
    for x in range(0, width, 500):
        for y in range(0, height, 500):
            noise.paste(tile, (x, y))
    buf = io.BytesIO()
    Image.blend(rgb, noise, 0.25).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bomb(padded_to: int) -> bytes:
    """100000×100000 PNG with a tiny IDAT, padded after IEND so that reading it all would show."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b""))
    return data + bytes(padded_to - len(data))


def time_validation(data: bytes, runs: int) -> tuple[float, float]:
    """Median seconds of (header-only check, full validation) on one CPU."""
    settings, options = Settings(), JobOptions()
    header_times, full_times = [], []
    for _ in range(runs):
        started = time.perf_counter()
        read_header(data[: settings.header_read_bytes], complete=False)
        header_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        verdict = validate_bytes(data, options=options, settings=settings)
        full_times.append(time.perf_counter() - started)
        assert verdict.accepted, verdict.message
    return statistics.median(header_times), statistics.median(full_times)


class NullSubmitter:
    def submit(self, params: JobParameters) -> str:
        return "bench"


def s3_reads(cases: dict[str, bytes]) -> dict[str, tuple[str, int, Counter[str]]]:
    """Run the real Intake on each upload against moto; bytes of every GetObject body counted by a hook."""
    from moto import mock_aws

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    aws.clear_cache()
    results: dict[str, tuple[str, int, Counter[str]]] = {}
    with mock_aws():
        settings = Settings(input_bucket=BUCKET, jobs_table="bench-jobs")
        s3 = aws.client("s3", settings)
        create_bucket(s3, BUCKET, settings.region)
        ddb = aws.client("dynamodb", settings)
        create_jobs_table(ddb, settings.jobs_table)
        sns = aws.client("sns", settings)
        settings = settings.replace(topic_arn=sns.create_topic(Name="bench")["TopicArn"])

        counted = {"bytes": 0}
        calls: Counter[str] = Counter()

        def on_get(http_response: Any, parsed: Any, model: Any, **_: Any) -> None:
            counted["bytes"] += int(parsed.get("ContentLength") or 0)

        def on_call(model: Any, **_: Any) -> None:
            calls[model.name] += 1

        s3.meta.events.register("after-call.s3.GetObject", on_get)
        s3.meta.events.register("before-call.s3", on_call)
        intake = Intake(settings, s3=s3, store=JobStore(dynamodb_client=ddb, table_name=settings.jobs_table),
                        submitter=NullSubmitter(),
                        notifier=Notifier(sns_client=sns, topic_arn=settings.topic_arn,
                                          upload_prefix=settings.upload_prefix))
        for name, data in cases.items():
            key = f"uploads/{name}"
            put = s3.put_object(Bucket=BUCKET, Key=key, Body=data)
            etag = s3.head_object(Bucket=BUCKET, Key=key, VersionId=put["VersionId"])["ETag"].strip('"')
            counted["bytes"] = 0
            calls.clear()
            result = intake.process(UploadEvent(BUCKET, key, len(data), etag, put["VersionId"], "ObjectCreated:Put"))
            outcome = f"{result.outcome} {result.verdict.code or ''}".strip() if result.verdict else str(result.outcome)
            results[name] = (outcome, counted["bytes"], Counter(calls))
    aws.clear_cache()
    return results


def package_size() -> tuple[float, float, str]:
    """(zipped MB, unzipped MB, note) of common/ + functions/ + the Lambda-platform wheels."""
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")  # jsii banner: noise here
    from infra.constructs.bundling import CODE_PACKAGES, REQUIREMENTS, pip_install_command

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "bundle"
        for package in CODE_PACKAGES:
            shutil.copytree(REPO / package, target / package,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
        done = subprocess.run(pip_install_command(REPO / REQUIREMENTS, target), capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            return float("nan"), float("nan"), "pip failed: " + done.stderr.strip().splitlines()[-1][:100]
        archive = Path(tmp) / "lambda.zip"
        unzipped = 0
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for path in sorted(target.rglob("*")):
                if path.is_file():
                    unzipped += path.stat().st_size
                    zf.write(path, path.relative_to(target))
        requirements = ", ".join(line for line in (REPO / REQUIREMENTS).read_text().splitlines()
                                 if line and not line.startswith("#"))
        return archive.stat().st_size / 1e6, unzipped / 1e6, requirements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-package", action="store_true", help="skip the pip download of the bundle")
    args = parser.parse_args()

    cpu = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {cpu})  # one vCPU, like a Lambda with <= 1769 MB
    photo = twelve_mp_jpeg()
    header_s, full_s = time_validation(photo, args.runs)

    print("| measure | value | goal |")
    print("| --- | --- | --- |")
    print(f"| validation of a 12 MP JPEG ({len(photo) / 1e6:.1f} MB), 1 CPU, median of {args.runs} "
          f"| {full_s:.3f} s (header only: {header_s * 1e6:.0f} µs) | < 0.5 s |")

    limit = Settings().max_upload_bytes
    cases = {"oversized.jpg": photo + bytes(limit + 1024 * 1024 - len(photo)),
             "bomb.png": png_bomb(5 * 1024 * 1024),
             "photo-12mp.jpg": photo}
    reads = s3_reads(cases)
    goals = {"oversized.jpg": "0 (HEAD only)", "bomb.png": "< 1 MB", "photo-12mp.jpg": "its size, once"}
    for name, (outcome, nbytes, calls) in reads.items():
        s3_calls = ", ".join(f"{op} ×{n}" for op, n in sorted(calls.items()))
        print(f"| S3 bytes read: {name} ({len(cases[name]) / 1e6:.1f} MB) -> {outcome} "
              f"| {nbytes:,} B ({s3_calls}) | {goals[name]} |")

    if args.skip_package:
        print("| Lambda package (zipped) | skipped | |")
    else:
        zipped, unzipped, note = package_size()
        print(f"| Lambda package: common/ + functions/ + {note} | {zipped:.1f} MB zipped, {unzipped:.1f} MB "
              f"unzipped | < 50 MB zipped, 250 MB unzipped (Lambda limits) |")


if __name__ == "__main__":
    main()
