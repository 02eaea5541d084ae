"""The notification contract as published in docs/worker.md: its examples satisfy the schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from common.contract import (
    EventType,
    FailureCode,
    ImageInfo,
    Notification,
    RejectionCode,
    notification_schema,
    validate_notification,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "worker.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_documented_payload_satisfies_the_schema_and_all_event_types_are_shown():
    payloads = [json.loads(b) for b in blocks("json") if '"schema_version"' in b]
    for payload in payloads:
        validate_notification(payload)
    assert {p["event_type"] for p in payloads} == {str(e) for e in EventType}


def test_documented_filter_policy_and_receiver_example_are_valid():
    policies = [json.loads(b) for b in blocks("json") if '"schema_version"' not in b]
    assert policies and set(policies[0]["event_type"]) <= {str(e) for e in EventType}
    for code in blocks("python"):
        compile(code, str(DOC), "exec")


@pytest.mark.parametrize("broken", [
    {"error": None},  # a failure must say why
    {"event_type": "upscale.finished"},
    {"durations": {"queued": -1, "download": None, "inference": None, "upload": None, "total": None}},
    {"scale": 8},
    {"input": {"bucket": "b", "key": "k", "uri": "http://not-s3"}},
])
def test_schema_rejects_broken_failure_messages(broken):
    good = Notification(EventType.FAILED, "j", ImageInfo("b", "k"), error=None).to_dict()
    good["error"] = {"code": str(FailureCode.WORKER_CRASHED), "message": "killed", "retryable": False}
    validate_notification(good)
    with pytest.raises(jsonschema.ValidationError):
        validate_notification({**good, **broken})


def test_schema_requires_output_and_url_for_success_and_an_error_for_rejection():
    success = Notification(EventType.SUCCEEDED, "j", ImageInfo("b", "k"), output=ImageInfo("o", "x.png"),
                           presigned_url="https://o.s3.amazonaws.com/x.png?X-Amz-Expires=60").to_dict()
    validate_notification(success)
    for broken in ({"output": None}, {"presigned_url": None}):
        with pytest.raises(jsonschema.ValidationError):
            validate_notification({**success, **broken})
    rejected = Notification(EventType.REJECTED, "j", ImageInfo("b", "k")).to_dict()
    with pytest.raises(jsonschema.ValidationError):
        validate_notification(rejected)
    rejected["error"] = {"code": str(RejectionCode.CORRUPT_IMAGE), "message": "bad", "retryable": False}
    validate_notification(rejected)
    assert notification_schema()["properties"]["event_type"]["enum"] == [str(e) for e in EventType]
