"""Issue 11: decode time bounded before decoding, a Lambda that hands records back instead of timing
out, broken EXIF that never crashes validation, keys near S3's 1024-byte limit."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from hostile_images import BROKEN_EXIF, encode, many_chunk_png, many_scan_jpeg, tiff_ifd, with_exif
from PIL import Image

from common.contract import JobState, OutputFormat, RejectionCode
from common.image_bounds import (
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    MAX_PNG_CHUNKS,
    decode_cost_problem,
    jpeg_structure,
    png_chunk_count,
)
from common.jobs import upload_job_id
from common.keys import S3_MAX_KEY_BYTES, fit_key, output_key_for, rejected_key_for
from common.settings import Settings
from functions.intake import handler
from functions.intake.options import default_options
from functions.intake.validation import ImageHeader, read_header, validate_bytes

SETTINGS = Settings()
BUCKET = "upscaler-input-test"


def validate(data: bytes) -> Any:
    return validate_bytes(data, options=default_options(SETTINGS), settings=SETTINGS)


# --- decode cost, counted before decoding ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
@pytest.mark.parametrize("progressive", [False, True])
def test_real_encoders_stay_far_below_the_limits(mode: str, progressive: bool) -> None:
    data = encode(Image.new(mode, (640, 480), 90), "JPEG", progressive=progressive, optimize=True)
    found = jpeg_structure(data)
    assert 1 <= found.scans <= 18 and found.segments < 50  # libjpeg: 1 per baseline image, 6/10/18 progressive
    assert found.scans * 5 < MAX_JPEG_SCANS and decode_cost_problem(data) is None
    assert validate(data).accepted


def test_a_progressive_jpeg_with_tens_of_thousands_of_scans_is_refused_quickly() -> None:
    data = many_scan_jpeg(1024, 1024, 30_000)
    assert len(data) < 1_500_000  # about a megabyte: passes every size limit
    assert jpeg_structure(data, max_scans=10**9, max_segments=10**9).scans > 30_000
    started = time.perf_counter()
    verdict = validate(data)
    elapsed = time.perf_counter() - started
    assert (verdict.accepted, verdict.code) == (False, RejectionCode.DECODE_TOO_COSTLY)
    assert f"more than {MAX_JPEG_SCANS} scans" in verdict.message and "save it again" in verdict.message
    assert elapsed < 30  # counted, never decoded (decoding would take many minutes, even on a quiet machine)


def test_the_scan_count_refuses_from_the_header_bytes_when_the_scans_are_there() -> None:
    data = many_scan_jpeg(64, 64, 2_000)  # tiny scans: hundreds of them in the first 64 KiB
    found = read_header(data[:SETTINGS.header_read_bytes], complete=False)
    assert not isinstance(found, ImageHeader)
    assert found.code is RejectionCode.DECODE_TOO_COSTLY  # before the job record and the full GET


def test_exactly_the_limit_passes_one_more_is_refused() -> None:
    original = jpeg_structure(many_scan_jpeg(32, 32, 0)).scans
    at_limit = many_scan_jpeg(32, 32, MAX_JPEG_SCANS - original)
    assert jpeg_structure(at_limit).scans == MAX_JPEG_SCANS and decode_cost_problem(at_limit) is None
    over = many_scan_jpeg(32, 32, MAX_JPEG_SCANS - original + 1)
    problem = decode_cost_problem(over)
    assert problem is not None and problem.what == "scans"


def test_millions_of_tiny_jpeg_segments_are_refused() -> None:
    data = encode(Image.new("RGB", (32, 32)), "JPEG")
    comments = b"\xff\xfe\x00\x02" * (MAX_JPEG_SEGMENTS + 10)  # empty COM segments before the frame
    hostile = data[:2] + comments + data[2:]
    verdict = validate(hostile)
    assert verdict.code is RejectionCode.DECODE_TOO_COSTLY and "marker segments" in verdict.message


@pytest.mark.parametrize("kind", [b"IDAT", b"tEXt", b"zzZz"])
def test_a_png_of_hundreds_of_thousands_of_tiny_chunks_is_refused_quickly(kind: bytes) -> None:
    data = many_chunk_png(64, 64, 2 * MAX_PNG_CHUNKS, kind=kind)
    assert png_chunk_count(data, limit=10**9) > 2 * MAX_PNG_CHUNKS
    started = time.perf_counter()
    verdict = validate(data)
    assert time.perf_counter() - started < 1.0
    assert verdict.code is RejectionCode.DECODE_TOO_COSTLY and "chunks" in verdict.message


def test_a_png_with_a_few_thousand_chunks_is_fine() -> None:
    data = many_chunk_png(64, 64, 5_000)
    assert decode_cost_problem(data) is None and validate(data).accepted


def test_counting_never_raises_on_garbage() -> None:
    for data in (b"\xff\xd8\xff", b"\xff\xd8\xff\xda\x00\x00", b"\xff\xd8\xff\xe0\xff\xff", b"\x89PNG\r\n\x1a\n\xff",
                 b"\xff\xd8" + b"\xff" * 1000, b"\x89PNG\r\n\x1a\n" + b"\x00" * 7):
        decode_cost_problem(data)


# --- broken EXIF: accepted, never a crash ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("case", sorted(BROKEN_EXIF))
def test_broken_exif_never_crashes_validation(case: str, fmt: str) -> None:
    verdict = validate(with_exif(fmt, tiff_ifd(BROKEN_EXIF[case])))
    assert verdict.accepted, verdict.message
    assert verdict.orientation in range(1, 9)


def test_text_orientation_is_not_applied_but_a_valid_one_is() -> None:
    assert validate(with_exif("JPEG", tiff_ifd(BROKEN_EXIF["orientation as text 'abc'"]))).orientation == 1
    assert validate(with_exif("JPEG", tiff_ifd(BROKEN_EXIF["orientation with count 2"]))).orientation == 6


# --- keys at S3's 1024-byte limit -----------------------------------------------------------------------------


def _utf8(text: str) -> int:
    return len(text.encode())


@pytest.mark.parametrize("char", ["a", "é", "東", "😀"])  # 1, 2, 3 and 4 UTF-8 bytes
def test_derived_keys_never_exceed_1024_utf8_bytes(char: str) -> None:
    for pad in range(-8, 9):
        name = char * ((S3_MAX_KEY_BYTES - _utf8("uploads/") - 4) // _utf8(char) + pad)
        upload = f"uploads/{name}.png"
        if _utf8(upload) > S3_MAX_KEY_BYTES:
            continue  # S3 itself refuses such an upload
        for key in (rejected_key_for(upload, SETTINGS),
                    *(output_key_for(upload, fmt, SETTINGS) for fmt in OutputFormat)):
            assert _utf8(key) <= S3_MAX_KEY_BYTES
            key.encode("utf-8")  # never a split character


def test_a_key_that_fits_is_unchanged_and_one_that_does_not_is_shortened_deterministically() -> None:
    fits = "x" * (S3_MAX_KEY_BYTES - _utf8("rejected/"))
    assert rejected_key_for("uploads/" + fits, SETTINGS) == "rejected/" + fits  # exactly 1024 bytes
    too_long = "é" * 508  # 1016 bytes: uploads/ + 1016 = 1024, rejected/ + 1016 = 1025
    upload = "uploads/" + too_long
    assert _utf8(upload) == S3_MAX_KEY_BYTES
    rejected = rejected_key_for(upload, SETTINGS)
    assert rejected == rejected_key_for(upload, SETTINGS)  # the retry finds the same copy
    assert rejected.startswith("rejected/éé") and _utf8(rejected) <= S3_MAX_KEY_BYTES
    assert rejected != rejected_key_for("uploads/" + "é" * 507 + "e", SETTINGS)  # same start, other name
    output = output_key_for(upload, OutputFormat.WEBP, SETTINGS)
    assert output.startswith("outputs/éé") and output.endswith(".webp") and _utf8(output) <= S3_MAX_KEY_BYTES


def test_fit_key_refuses_prefixes_that_leave_no_room() -> None:
    with pytest.raises(ValueError, match="no room"):
        fit_key("p" * 1020, "name", ".webp")


# --- the Lambda: remaining time checked before each record -------------------------------------------------


class RunningOutContext:
    """A LambdaContext whose remaining time drops by `step_ms` each time it is asked."""

    function_name = "upscaler-intake"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:upscaler-intake"
    aws_request_id = "52fdfc07-2182-154f-163f-5f0f9a621d72"

    def __init__(self, remaining_ms: int, step_ms: int) -> None:
        self.remaining_ms, self.step_ms = remaining_ms, step_ms

    def get_remaining_time_in_millis(self) -> int:
        left, self.remaining_ms = self.remaining_ms, self.remaining_ms - self.step_ms
        return max(0, left)


def test_records_left_when_time_runs_out_are_handed_back_untouched(
        aws_stack: Any, events: SimpleNamespace, corpus: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler, "get_intake", lambda: aws_stack.intake)
    objs = [aws_stack.put(f"uploads/deadline/{i}.jpg", corpus["photo.jpg"]) for i in range(4)]
    messages = [events.upload_message(obj) for obj in objs]
    # 40 s, 24 s, 8 s, 0 s left before each record: the reserve is 15 s
    context = RunningOutContext(40_000, handler.RECORD_RESERVE_MS + 1_000)
    response = handler.lambda_handler({"Records": messages}, context)
    handed_back = [failure["itemIdentifier"] for failure in response["batchItemFailures"]]
    assert handed_back == [m["messageId"] for m in messages[2:]]
    states = [aws_stack.store.get(upload_job_id(BUCKET, o["key"], o["versionId"], o["eTag"], o["size"]))
              for o in objs]
    assert [s is not None and s.state is not JobState.ACCEPTED for s in states[:2]] == [True, True]
    assert states[2:] == [None, None]  # not started: no record, no S3 read; the queue redelivers them


def test_the_first_record_always_runs_even_with_little_time_left() -> None:
    ran: list[str] = []
    guarded = handler.deadline_guard(RunningOutContext(1_000, 0),
                                     lambda record, _left: ran.append(record.message_id))
    guarded(SimpleNamespace(message_id="first"))  # type: ignore[arg-type]
    with pytest.raises(handler.OutOfTimeError):
        guarded(SimpleNamespace(message_id="second"))  # type: ignore[arg-type]
    assert ran == ["first"]


def test_a_hostile_upload_is_rejected_moved_and_notified(aws_stack: Any, events: SimpleNamespace,
                                                         lambda_context: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler, "get_intake", lambda: aws_stack.intake)
    obj = aws_stack.put("uploads/scans.jpg", many_scan_jpeg(1024, 1024, 20_000))
    started = time.perf_counter()
    assert handler.lambda_handler({"Records": [events.upload_message(obj)]}, lambda_context) == \
        {"batchItemFailures": []}
    assert time.perf_counter() - started < 10
    record = aws_stack.store.get(upload_job_id(BUCKET, obj["key"], obj["versionId"], obj["eTag"], obj["size"]))
    assert record.state is JobState.REJECTED and record.attributes["error_code"] == "DECODE_TOO_COSTLY"
    assert record.attributes["rejected_key"] == "rejected/scans.jpg"
