"""What the intake Lambda costs per upload, measured; prints one table.

  .venv/bin/python benchmarks/intake_cost.py [--skip-package] [--runs 5]

1. Validation time of a 12 MP JPEG, HEIC, AVIF and TIFF (header + limits + full decode), pinned to one
   CPU like a 1-vCPU Lambda (goal < 0.5 s).
2. Bytes read from S3 by the real intake (moto, in process; counted with a botocore event hook on
   every GetObject response) for: a 51 MB upload refused for size (goal: none beyond HEAD), a
   decompression bomb of each format padded to 5 MB (goal < 1 MB; the TIFF bomb's IFD lies after
   the padding, as libtiff writes it), and the 12 MP files that are accepted.
3. The Lambda package: built by the CDK bundling's own local step (infra.constructs.bundling: common/,
   functions/ and pyproject.toml's `lambda` extra for the Lambda platform), zipped.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import struct
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

sys.path.insert(0, str(REPO / "tests" / "support"))

from format_bombs import isobmff_bomb, tiff_bomb  # noqa: E402

from common import aws  # noqa: E402
from common.contract import JobOptions  # noqa: E402
from common.heif import register_heif_opener  # noqa: E402
from common.jobs import JobStore  # noqa: E402
from common.lifecycle import JobLifecycle  # noqa: E402
from common.notify import Notifier  # noqa: E402
from common.settings import Settings  # noqa: E402
from common.work_queue import WorkQueue  # noqa: E402
from functions.intake.intake import Intake  # noqa: E402
from functions.intake.s3_events import UploadEvent  # noqa: E402
from functions.intake.validation import NeedMoreBytes, read_header, validate_bytes  # noqa: E402
from local_stack.resources import create_bucket, create_jobs_table  # noqa: E402

BUCKET = "bench-input"


def twelve_mp_photo() -> Image.Image:
    """4000×3000 photo-like picture: smooth gradients plus fine noise."""
    width, height = 4000, 3000
    base = Image.linear_gradient("L").resize((width, height))
    rgb = Image.merge("RGB", (base, base.transpose(Image.Transpose.ROTATE_180), base.rotate(90)))
    rng = random.Random(12)
    tile = Image.frombytes("RGB", (500, 500), rng.randbytes(500 * 500 * 3))
    noise = Image.new("RGB", (width, height))
    for x in range(0, width, 500):
        for y in range(0, height, 500):
            noise.paste(tile, (x, y))
    return Image.blend(rgb, noise, 0.25)


def twelve_mp(photo: Image.Image) -> dict[str, bytes]:
    """The photo as each accepted format writes it: JPEG q90, HEIC (x265) q90, AVIF q90, TIFF LZW."""
    register_heif_opener()
    files = {}
    for name, fmt, options in (("photo-12mp.jpg", "JPEG", {"quality": 90}),
                               ("photo-12mp.heic", "HEIF", {"quality": 90}),
                               ("photo-12mp.avif", "AVIF", {"quality": 90, "speed": 8}),
                               ("photo-12mp.tif", "TIFF", {"compression": "tiff_lzw"})):
        buf = io.BytesIO()
        photo.save(buf, fmt, **options)
        files[name] = buf.getvalue()
    return files


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
        head, far = data[: settings.header_read_bytes], {}
        started = time.perf_counter()
        # as intake reads: the first bytes, then a far range where the header continues (a TIFF's IFD)
        while isinstance(found := read_header(head, complete=False, far=far, size=len(data)), NeedMoreBytes):
            far[found.offset] = data[found.offset:found.offset + settings.header_read_bytes]
        header_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        verdict = validate_bytes(data, options=options, settings=settings)
        full_times.append(time.perf_counter() - started)
        assert verdict.accepted, verdict.message
    return statistics.median(header_times), statistics.median(full_times)


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
        sqs = aws.client("sqs", settings)
        settings = settings.replace(topic_arn=sns.create_topic(Name="bench")["TopicArn"],
                                    work_queue_url=sqs.create_queue(QueueName="bench-work")["QueueUrl"])

        counted = {"bytes": 0}
        calls: Counter[str] = Counter()

        def on_get(http_response: Any, parsed: Any, model: Any, **_: Any) -> None:
            counted["bytes"] += int(parsed.get("ContentLength") or 0)

        def on_call(model: Any, **_: Any) -> None:
            calls[model.name] += 1

        s3.meta.events.register("after-call.s3.GetObject", on_get)
        s3.meta.events.register("before-call.s3", on_call)
        notifier = Notifier(sns_client=sns, topic_arn=settings.topic_arn, upload_prefix=settings.upload_prefix)
        intake = Intake(settings, s3=s3,
                        lifecycle=JobLifecycle(store=JobStore(dynamodb_client=ddb, table_name=settings.jobs_table),
                                               notifier=notifier),
                        work_queue=WorkQueue(sqs_client=sqs, queue_url=settings.work_queue_url), scaler=None)
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
    from infra.constructs.bundling import LocalPythonBundling, bundle_requirements

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "bundle"
        target.mkdir()
        try:
            LocalPythonBundling(source=REPO).try_bundle(str(target))
        except RuntimeError as exc:
            return float("nan"), float("nan"), "pip failed: " + str(exc).strip().splitlines()[-1][:100]
        archive = Path(tmp) / "lambda.zip"
        unzipped = 0
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for path in sorted(target.rglob("*")):
                if path.is_file():
                    unzipped += path.stat().st_size
                    zf.write(path, path.relative_to(target))
        return archive.stat().st_size / 1e6, unzipped / 1e6, ", ".join(bundle_requirements(source=REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-package", action="store_true", help="skip the pip download of the bundle")
    args = parser.parse_args()

    photos = twelve_mp(twelve_mp_photo())  # encoded on every CPU, before pinning
    cpu = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {cpu})  # one vCPU, like a Lambda with <= 1769 MB

    print("| measure | value | goal |")
    print("| --- | --- | --- |")
    for name, data in photos.items():
        header_s, full_s = time_validation(data, args.runs)
        print(f"| validation of a 12 MP {name.rsplit('.', 1)[1].upper()} ({len(data) / 1e6:.1f} MB), 1 CPU, median "
              f"of {args.runs} | {full_s:.3f} s (header only: {header_s * 1e6:.0f} µs) | < 0.5 s |")

    limit = Settings().max_upload_bytes
    five_mb = 5 * 1024 * 1024
    photo = photos["photo-12mp.jpg"]
    cases = {"oversized.jpg": photo + bytes(limit + 1024 * 1024 - len(photo)),
             "bomb.png": png_bomb(five_mb),
             "bomb.heic": isobmff_bomb("HEIF", five_mb),
             "bomb.avif": isobmff_bomb("AVIF", five_mb),
             "bomb.tif": tiff_bomb(five_mb),
             **photos}
    reads = s3_reads(cases)
    goals = {"oversized.jpg": "0 (HEAD only)", **dict.fromkeys([n for n in cases if n.startswith("bomb")], "< 1 MB"),
             **dict.fromkeys(photos, "its size, once")}
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
