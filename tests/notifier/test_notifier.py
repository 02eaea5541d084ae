"""Notifier Lambda: a Batch FAILED event closes a job the worker could not report, exactly once."""

from __future__ import annotations

import copy

import pytest

from common.contract import FailureCode, JobState, validate_notification
from functions.notifier.batch_failure import classify_batch_failure, handle_batch_state_change, job_id_from_detail


def batch_event(job_id: str | None = "job-1", *, status="FAILED", status_reason="Essential container in task exited",
                exit_code: int | None = 1, reason: str | None = None, job_name: str | None = None) -> dict:
    environment = [{"name": "UPSCALER_JOB_INPUT_BUCKET", "value": "in"}]
    if job_id:
        environment.append({"name": "UPSCALER_JOB_ID", "value": job_id})
    container = {"environment": environment, "exitCode": exit_code}
    if reason:
        container["reason"] = reason
    return {
        "version": "0", "source": "aws.batch", "detail-type": "Batch Job State Change",
        "detail": {"jobId": "batch-123", "jobName": job_name or f"upscale-{job_id}", "status": status,
                   "statusReason": status_reason, "container": container,
                   "attempts": [{"container": {"exitCode": exit_code}, "statusReason": status_reason}]},
    }


@pytest.mark.parametrize("kwargs, code", [
    ({"status_reason": "Host EC2 (instance i-0abc) terminated.", "exit_code": None}, FailureCode.INFRASTRUCTURE),
    ({"status_reason": "Task failed to start", "exit_code": None,
      "reason": "CannotPullContainerError: pull image manifest retried 5 time(s)"}, FailureCode.INFRASTRUCTURE),
    ({"status_reason": "Job attempt duration exceeded timeout", "exit_code": 143}, FailureCode.TIMEOUT),
    ({"exit_code": 137, "reason": "OutOfMemoryError: Container killed due to memory usage"},
     FailureCode.WORKER_CRASHED),
    ({"exit_code": 137}, FailureCode.WORKER_CRASHED),
    ({"exit_code": 1}, FailureCode.WORKER_CRASHED),
    ({"exit_code": 75}, FailureCode.INTERNAL_ERROR),
    ({"status_reason": "Dependent job failed", "exit_code": None}, FailureCode.INTERNAL_ERROR),
])
def test_classify_batch_failure(kwargs, code):
    found, message = classify_batch_failure(batch_event(**kwargs)["detail"])
    assert found is code
    assert message


def test_job_id_from_environment_then_job_name():
    assert job_id_from_detail(batch_event("abc")["detail"]) == "abc"
    assert job_id_from_detail(batch_event(None, job_name="upscale-def")["detail"]) == "def"
    assert job_id_from_detail(batch_event(None, job_name="someone-elses-job")["detail"]) is None


@pytest.mark.parametrize("state", [JobState.SUBMITTED, JobState.RUNNING, JobState.ACCEPTED])
def test_unfinished_job_is_marked_failed_and_notified_once(nworld, state):
    nworld.job("job-1", state)
    event = batch_event("job-1", status_reason="Host EC2 (instance i-0abc) terminated.", exit_code=None)

    first = handle_batch_state_change(event, store=nworld.store, notifier=nworld.notifier)
    again = handle_batch_state_change(copy.deepcopy(event), store=nworld.store, notifier=nworld.notifier)

    assert (first.action, first.code) == ("marked_failed", FailureCode.INFRASTRUCTURE)
    assert again.action == "already_terminal"
    record = nworld.store.get("job-1")
    assert record.state is JobState.FAILED
    assert record.attributes["error_code"] == "INFRASTRUCTURE" and record.attributes["failed_by"] == "notifier"
    notes = nworld.notifications()
    assert len(notes) == 1
    payload = notes[0]["payload"]
    validate_notification(payload)
    assert payload["event_type"] == "upscale.failed" and payload["job_id"] == "job-1"
    assert payload["input"]["uri"] == "s3://in/uploads/job-1.png"
    assert (payload["model"], payload["scale"]) == ("x4plus", 3.0)
    assert payload["error"]["code"] == "INFRASTRUCTURE" and payload["error"]["retryable"] is True
    assert payload["durations"]["total"] >= 0
    assert notes[0]["MessageAttributes"]["event_type"]["Value"] == "upscale.failed"


@pytest.mark.parametrize("state", [JobState.SUCCEEDED, JobState.REJECTED])
def test_failed_event_after_terminal_state_sends_nothing(nworld, state):
    nworld.job("job-2", state)
    outcome = handle_batch_state_change(batch_event("job-2", exit_code=137), store=nworld.store,
                                        notifier=nworld.notifier)
    assert outcome.action == "already_terminal"
    assert nworld.store.get("job-2").state is state
    assert nworld.notifications() == []


@pytest.mark.parametrize("event", [
    batch_event("job-3", status="SUCCEEDED", exit_code=0),
    batch_event("job-3", status="RUNNING", exit_code=None),
    {**batch_event("job-3"), "detail-type": "Batch Job Queue Blocked"},
    batch_event(None, job_name="other-team-job"),
])
def test_other_events_are_ignored(nworld, event):
    nworld.job("job-3", JobState.RUNNING)
    assert handle_batch_state_change(event, store=nworld.store, notifier=nworld.notifier).action == "ignored"
    assert nworld.store.get("job-3").state is JobState.RUNNING
    assert nworld.notifications() == []


def test_a_failed_publish_is_retried_from_the_stored_message(nworld):
    class DownNotifier:
        def publish_payload(self, payload):
            raise ConnectionError("SNS unreachable")

    nworld.job("job-5", JobState.RUNNING)
    event = batch_event("job-5", exit_code=137)
    with pytest.raises(ConnectionError):
        handle_batch_state_change(event, store=nworld.store, notifier=DownNotifier())
    record = nworld.store.get("job-5")
    assert record.state is JobState.FAILED and record.attributes["notified"] is False

    # Lambda retries the invocation: the job is terminal now, so the stored message is what goes out.
    retried = handle_batch_state_change(copy.deepcopy(event), store=nworld.store, notifier=nworld.notifier)
    assert retried.action == "delivered_stored"
    again = handle_batch_state_change(copy.deepcopy(event), store=nworld.store, notifier=nworld.notifier)
    assert again.action == "already_terminal"
    notes = nworld.notifications()
    assert [n["payload"]["event_type"] for n in notes] == ["upscale.failed"]
    assert notes[0]["payload"]["error"]["code"] == "WORKER_CRASHED"


def test_success_the_worker_could_not_announce_is_announced_by_the_failed_event(nworld):
    from common.contract import EventType, ImageInfo, Notification
    from common.notify import outbox_attributes

    nworld.job("job-6", JobState.RUNNING)
    stored = Notification(event_type=EventType.SUCCEEDED, job_id="job-6", input=ImageInfo("in", "uploads/job-6.png"),
                          output=ImageInfo("out", "outputs/job-6.png", 40, 40, "png"),
                          presigned_url="https://out.s3.amazonaws.com/outputs/job-6.png?X-Amz-Signature=s")
    assert nworld.store.transition("job-6", JobState.SUCCEEDED, attributes=outbox_attributes(stored))

    outcome = handle_batch_state_change(batch_event("job-6", exit_code=75), store=nworld.store,
                                        notifier=nworld.notifier)
    assert outcome.action == "delivered_stored"
    assert nworld.store.get("job-6").state is JobState.SUCCEEDED
    assert [n["payload"]["event_type"] for n in nworld.notifications()] == ["upscale.succeeded"]


def test_unknown_job_is_reported_not_created(nworld):
    outcome = handle_batch_state_change(batch_event("never-accepted"), store=nworld.store, notifier=nworld.notifier)
    assert outcome.action == "unknown_job"
    assert nworld.store.get("never-accepted") is None and nworld.notifications() == []


def test_lambda_handler_reads_settings_from_environment(nworld, monkeypatch):
    from functions.notifier.handler import lambda_handler

    for name, value in nworld.settings.to_env().items():
        monkeypatch.setenv(name, value)
    nworld.job("job-4", JobState.RUNNING)

    class Context:
        function_name, memory_limit_in_mb, aws_request_id = "notifier", 256, "req-1"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:notifier"

    result = lambda_handler(batch_event("job-4", status_reason="Job attempt duration exceeded timeout"), Context())
    assert result["action"] == "marked_failed" and result["code"] == "TIMEOUT"
    assert [n["payload"]["error"]["code"] for n in nworld.notifications()] == ["TIMEOUT"]
