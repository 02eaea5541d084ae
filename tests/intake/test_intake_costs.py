"""What a bad upload costs: S3 bytes read, decodes attempted; and options/animation through the whole intake."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from common.contract import JobState
from functions.intake import intake as intake_module
from functions.intake.intake import Outcome
from functions.intake.s3_events import UploadEvent

BUCKET = "upscaler-input-test"


def event_for(obj: dict[str, Any]) -> UploadEvent:
    return UploadEvent(BUCKET, obj["key"], obj["size"], obj["eTag"], obj.get("versionId"), "ObjectCreated:Put")


@pytest.fixture
def no_decode(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail the test if intake tries to decode: records which decoder entry point was called."""
    called: list[str] = []

    def forbid(name: str) -> Any:
        def call(*_args: Any, **_kwargs: Any) -> Any:
            called.append(name)
            raise AssertionError(f"{name} must not run for this upload")
        return call

    monkeypatch.setattr(intake_module, "decode_check", forbid("decode_check"))
    monkeypatch.setattr(intake_module, "validate_bytes", forbid("validate_bytes"))
    return called


@pytest.mark.parametrize("name", ["bomb.png", "bomb.jpg", "bomb.webp"])
def test_bomb_is_refused_from_one_small_ranged_get(aws_stack: Any, corpus: dict[str, bytes], name: str,
                                                   no_decode: list[str]) -> None:
    # pad the bomb so it is bigger than the header read: only the first bytes may be fetched
    data = corpus[name] + bytes(300_000) if name == "bomb.png" else corpus[name]
    obj = aws_stack.put(f"uploads/{name}", data)
    result = aws_stack.intake.process(event_for(obj))
    assert result.outcome is Outcome.REJECTED
    assert result.verdict.code == "DECOMPRESSION_BOMB"
    assert aws_stack.s3.bytes_read == result.bytes_read <= aws_stack.settings.header_read_bytes
    assert aws_stack.s3.calls.count("get_object") == 1
    assert no_decode == []


def test_oversized_upload_costs_a_head_and_no_get(aws_stack: Any, corpus: dict[str, bytes],
                                                  no_decode: list[str]) -> None:
    aws_stack.intake._settings = aws_stack.settings.replace(max_upload_bytes=10_000)
    obj = aws_stack.put("uploads/huge.png", corpus["photo.png"])  # 16 KB > 10 KB
    result = aws_stack.intake.process(event_for(obj))
    assert result.verdict.code == "FILE_TOO_LARGE"
    assert aws_stack.s3.bytes_read == 0
    assert "get_object" not in aws_stack.s3.calls
    assert aws_stack.s3.calls[:1] == ["head_object"]
    # still moved (a server-side copy: no bytes through the Lambda)
    head = aws_stack.clients["s3"].head_object(Bucket=BUCKET, Key="rejected/huge.png")
    assert head["ContentLength"] == len(corpus["photo.png"])


def test_jpeg_with_header_beyond_the_first_read_grows_the_read(aws_stack: Any, corpus: dict[str, bytes]) -> None:
    data = corpus["big_exif.jpg"]
    obj = aws_stack.put("uploads/big_exif.jpg", data)
    result = aws_stack.intake.process(event_for(obj))
    assert result.outcome is Outcome.QUEUED, result.verdict
    # header reads grew past 64 KiB, then the body was read once more for the decode
    assert aws_stack.s3.calls.count("get_object") >= 3
    assert result.bytes_read < 2 * len(data)


def test_header_beyond_the_growth_cap_falls_back_to_a_full_check(aws_stack: Any, corpus: dict[str, bytes]) -> None:
    aws_stack.intake._settings = aws_stack.settings.replace(header_read_bytes=1024)
    obj = aws_stack.put("uploads/big_exif.jpg", corpus["big_exif.jpg"])  # SOF beyond 16 × 1 KiB
    result = aws_stack.intake.process(event_for(obj))
    assert result.outcome is Outcome.QUEUED
    assert result.verdict.width == 96


def test_truncated_upload_is_refused_by_the_decode(aws_stack: Any, corpus: dict[str, bytes]) -> None:
    obj = aws_stack.put("uploads/cut.jpg", corpus["truncated.jpg"])
    result = aws_stack.intake.process(event_for(obj))
    assert result.verdict.code == "CORRUPT_IMAGE"
    assert aws_stack.store.get(result.job_id).state is JobState.REJECTED


def test_invalid_option_is_a_rejection_with_a_reason(aws_stack: Any, corpus: dict[str, bytes]) -> None:
    obj = aws_stack.put("uploads/opt.jpg", corpus["photo.jpg"], metadata={"scale": "16"})
    result = aws_stack.intake.process(event_for(obj))
    assert result.outcome is Outcome.REJECTED
    record = aws_stack.store.get(result.job_id)
    assert record.attributes["error_code"] == "INVALID_OPTION"
    assert "x-amz-meta-scale" in record.attributes["error_message"]
    (envelope,) = aws_stack.notifications()
    assert json.loads(envelope["Message"])["error"]["code"] == "INVALID_OPTION"
    assert aws_stack.work_queue.calls == 0


def test_animated_policy_through_intake(aws_stack: Any, corpus: dict[str, bytes], builders: SimpleNamespace) -> None:
    obj = aws_stack.put("uploads/anim.webp", corpus["animated.webp"])
    assert aws_stack.intake.process(event_for(obj)).verdict.code == "ANIMATED_IMAGE"

    lenient = builders.build_intake(aws_stack, aws_stack.settings.replace(accept_animated_first_frame=True))
    obj = aws_stack.put("uploads/anim.png", corpus["animated.png"])
    result = lenient.process(event_for(obj))
    assert result.outcome is Outcome.QUEUED
    warnings = aws_stack.store.get(result.job_id).attributes["intake_warnings"]
    assert warnings == ["The upload is animated (3 frames); only the first frame was upscaled."]
