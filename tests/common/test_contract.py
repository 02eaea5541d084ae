import jsonschema
import pytest

from common.contract import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATES,
    Durations,
    ErrorInfo,
    EventType,
    ImageInfo,
    JobOptions,
    JobParameters,
    JobState,
    ModelName,
    Notification,
    OutputFormat,
    allowed_sources,
    message_attributes,
    validate_notification,
)


def test_terminal_states_have_no_exit():
    for state in TERMINAL_STATES:
        assert ALLOWED_TRANSITIONS[state] == frozenset()
        assert state.is_terminal
    assert not JobState.RUNNING.is_terminal


def test_allowed_sources_follow_the_state_machine():
    assert allowed_sources(JobState.SUBMITTED) == {JobState.ACCEPTED}
    assert allowed_sources(JobState.RUNNING) == {JobState.SUBMITTED, JobState.RUNNING}
    assert allowed_sources(JobState.SUCCEEDED) == {JobState.RUNNING}
    assert allowed_sources(JobState.FAILED) == {JobState.ACCEPTED, JobState.SUBMITTED, JobState.RUNNING}
    assert allowed_sources(JobState.REJECTED) == {JobState.ACCEPTED}


def test_job_parameters_round_trip_through_environment():
    params = JobParameters(
        job_id="abc",
        input_bucket="in",
        input_key="uploads/a b+c/ü.jpg",
        input_version="v1",
        output_bucket="out",
        output_key="outputs/a b+c/ü.png",
        options=JobOptions(model=ModelName.ANIMEVIDEOV3, scale=2.5, output_format=OutputFormat.PNG),
        submitted_at="2026-01-01T00:00:00.000Z",
    )
    env = params.to_environment()
    assert all(isinstance(v, str) for v in env.values())
    assert JobParameters.from_environment(env) == params


def test_job_parameters_missing_fields_are_named():
    with pytest.raises(ValueError, match="UPSCALER_JOB_OUTPUT_KEY"):
        JobParameters.from_environment({"UPSCALER_JOB_ID": "x", "UPSCALER_JOB_INPUT_BUCKET": "b",
                                        "UPSCALER_JOB_INPUT_KEY": "k", "UPSCALER_JOB_OUTPUT_BUCKET": "o"})


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


def test_message_attributes_carry_event_type_and_prefix():
    attrs = message_attributes(_succeeded().to_dict()["event_type"], "uploads/")
    assert attrs["event_type"]["StringValue"] == "upscale.succeeded"
    assert attrs["upload_prefix"]["StringValue"] == "uploads/"
