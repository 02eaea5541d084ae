import json

import jsonschema
import pytest

from common.contract import (
    TERMINAL_STATES,
    Durations,
    ErrorInfo,
    EventType,
    ImageInfo,
    JobOptions,
    JobState,
    ModelName,
    Notification,
    OutputFormat,
    WorkItem,
    WorkItemError,
    event_id_for,
    message_attributes,
    notification_json,
    validate_notification,
)


def test_terminal_states_are_the_five_ends():
    assert {s for s in JobState if s.is_terminal} == set(TERMINAL_STATES) == {
        JobState.SUCCEEDED, JobState.FAILED, JobState.REJECTED, JobState.CANCELLED, JobState.SUPERSEDED}


def _item() -> WorkItem:
    return WorkItem(job_id="abc", input_bucket="in", input_key="uploads/a b+c/ü.jpg", input_version="v1",
                    output_bucket="out", output_key="outputs/a b+c/ü.png", input_format="jpeg", input_width=3,
                    input_height=4, warnings=("only the first frame",), enqueued_at="2026-01-01T00:00:00.000Z",
                    options=JobOptions(model=ModelName.ANIMEVIDEOV3, scale=2.5, output_format=OutputFormat.PNG))


def test_work_item_round_trips_through_its_message():
    item = _item()
    assert WorkItem.from_json(item.to_json()) == item
    assert item.output_format is OutputFormat.PNG


@pytest.mark.parametrize("body", ["", "[]", '{"version": 1}', '{"version": 2, "job_id": "x"}', "not json",
                                  _item().to_json().replace('"output_format":"png"', '"output_format":null')])
def test_anything_else_is_a_work_item_error(body):
    with pytest.raises(WorkItemError):
        WorkItem.from_json(body)


def _succeeded() -> Notification:
    return Notification(
        event_type=EventType.SUCCEEDED,
        job_id="j1",
        input=ImageInfo(bucket="in", key="uploads/a.jpg", width=10, height=20, format="jpeg"),
        output=ImageInfo(bucket="out", key="outputs/a.jpg", width=40, height=80, format="jpeg"),
        presigned_url="https://out.s3.amazonaws.com/outputs/a.jpg?X-Amz-Signature=x",
        presigned_url_expires_at="2026-01-02T00:00:00.000Z",
        model="x4plus",
        scale=4.0,
        durations=Durations(queued=1.0, download=0.1, inference=2.0, upload=0.2, total=3.5),
    )


def test_each_event_type_validates_against_the_schema():
    validate_notification(_succeeded().to_dict())
    for event in (EventType.REJECTED, EventType.FAILED):
        validate_notification(Notification(
            event_type=event, job_id="j", input=ImageInfo(bucket="in", key="uploads/x"),
            error=ErrorInfo(code="CORRUPT_IMAGE", message="The file is truncated."),
        ).to_dict())


def test_schema_refuses_success_without_output_and_failure_without_error():
    payload = _succeeded().to_dict()
    payload["output"] = None
    with pytest.raises(jsonschema.ValidationError):
        validate_notification(payload)
    failed = Notification(event_type=EventType.FAILED, job_id="j", input=ImageInfo(bucket="in", key="k")).to_dict()
    with pytest.raises(jsonschema.ValidationError):
        validate_notification(failed)


def test_message_attributes_carry_event_type_prefix_and_event_id():
    payload = _succeeded().to_dict()
    attrs = message_attributes(payload["event_type"], "uploads/", payload["event_id"])
    assert attrs["event_id"]["StringValue"] == payload["event_id"] == event_id_for(payload["job_id"],
                                                                                   "upscale.succeeded")
    assert attrs["event_type"]["StringValue"] == "upscale.succeeded"
    assert attrs["upload_prefix"]["StringValue"] == "uploads/"


def test_every_copy_of_a_notification_is_byte_identical():
    """Finding 1: a retried publish sent a second, different copy (occurred_at made again)."""
    note = _succeeded()
    assert note.to_json() == note.to_json() == notification_json(json.loads(note.to_json()))
    assert note.event_id.startswith("evt_") and note.event_id == _succeeded().event_id
    assert event_id_for("j1", "upscale.failed") != event_id_for("j2", "upscale.failed")
