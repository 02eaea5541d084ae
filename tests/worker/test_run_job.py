"""The worker's job flow against moto: success, permanent and transient failures, retries, races."""

from __future__ import annotations

import io
import os
import signal
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from botocore.exceptions import ClientError
from PIL import Image

from common.contract import (
    ATTR_EVENT_TYPE,
    ATTR_UPLOAD_PREFIX,
    EXIT_OK,
    EXIT_PERMANENT_FAILURE,
    EXIT_RETRYABLE,
    JobOptions,
    JobState,
    validate_notification,
)
from gpu_batch.engine.errors import EngineError, EngineOutOfMemoryError, OutputNotEncodableError
from gpu_batch.worker import run_job
from gpu_batch.worker.runtime import install_signal_handlers


def run(world, params, engine, *, attempt=1, s3=None, sleeps=None):
    return run_job(params, settings=world.settings, engine=engine, s3=s3 or world.s3, store=world.store,
                   notifier=world.notifier, attempt=attempt,
                   sleep=(sleeps.append if sleeps is not None else lambda s: None))


class FlakyS3:
    """The moto S3 client, except the named operation fails with the given error code and status."""

    def __init__(self, s3, operation, code="SlowDown", status=503):
        self._s3, self._operation, self._code, self._status = s3, operation, code, status

    def __getattr__(self, name):
        if name == self._operation:
            def fail(**kwargs):
                raise ClientError({"Error": {"Code": self._code, "Message": "injected"},
                                   "ResponseMetadata": {"HTTPStatusCode": self._status}}, name)
            return fail
        return getattr(self._s3, name)


def test_success_writes_output_record_and_one_valid_notification(world, kit):
    params = world.submitted_job("job-ok", "uploads/album/cat.png", kit.image(24, 16))
    engine = kit.FakeEngine()
    before = datetime.now(UTC)

    assert run(world, params, engine) == EXIT_OK

    assert engine.preloaded == ["animevideov3"]
    head = world.s3.head_object(Bucket=params.output_bucket, Key=params.output_key)
    assert head["ContentType"] == "image/png"
    meta = head["Metadata"]
    assert meta["source-key"] == "uploads/album/cat.png"
    assert meta["source-bucket"] == params.input_bucket and meta["source-version"] == params.input_version
    assert (meta["model"], meta["scale"]) == ("animevideov3", "2.0")
    assert (meta["input-width"], meta["input-height"], meta["output-width"], meta["output-height"]) == \
        ("24", "16", "48", "32")
    assert float(meta["inference-seconds"]) >= 0 and float(meta["download-seconds"]) >= 0
    body = world.s3.get_object(Bucket=params.output_bucket, Key=params.output_key)["Body"].read()
    assert Image.open(io.BytesIO(body)).size == (48, 32)

    record = world.store.get("job-ok")
    assert record.state is JobState.SUCCEEDED
    assert record.attributes["output_key"] == params.output_key
    assert (record.attributes["output_width"], record.attributes["output_height"]) == (48, 32)
    assert set(record.attributes["durations"]) >= {"download", "inference", "upload", "total"}
    assert record.attributes["attempts"] == 1 and record.attributes["notification_message_id"]

    notes = world.notifications()
    assert kit.event_types(notes) == ["upscale.succeeded"]
    note = notes[0]
    payload = note["payload"]
    validate_notification(payload)
    assert note["MessageAttributes"][ATTR_EVENT_TYPE]["Value"] == "upscale.succeeded"
    assert note["MessageAttributes"][ATTR_UPLOAD_PREFIX]["Value"] == world.settings.upload_prefix
    assert payload["job_id"] == "job-ok" and payload["error"] is None
    assert payload["input"] == {"bucket": params.input_bucket, "key": params.input_key, "width": 24, "height": 16,
                                "format": "png", "uri": params.input_uri}
    assert payload["output"]["uri"] == params.output_uri and payload["output"]["width"] == 48
    assert payload["model"] == "animevideov3" and payload["scale"] == 2.0
    durations = payload["durations"]
    assert all(durations[k] is not None and durations[k] >= 0 for k in durations)
    assert durations["total"] >= durations["download"] + durations["inference"] + durations["upload"] - 0.01

    # The presigned URL is a SigV4 GET for this output version that expires when the payload says.
    url = payload["presigned_url"]
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == [str(world.settings.presigned_url_expiry_seconds)]
    assert query["versionId"] == [world.s3.head_object(Bucket=params.output_bucket,
                                                       Key=params.output_key)["VersionId"]]
    expires_at = datetime.fromisoformat(payload["presigned_url_expires_at"].replace("Z", "+00:00"))
    expected = before + timedelta(seconds=world.settings.presigned_url_expiry_seconds)
    assert abs((expires_at - expected).total_seconds()) < 30
    fetched = requests.get(url, timeout=10)  # served by moto's in-process HTTP mock
    assert fetched.status_code == 200 and fetched.content == body


def test_format_option_sets_content_type_quality_and_ascii_metadata(world, kit):
    key = "uploads/фото 1.jpg"
    params = world.submitted_job("job-webp", key, kit.image(20, 20, "JPEG"),
                                 options=JobOptions(model="animevideov3", scale=4.0, output_format="webp"),
                                 output_key="outputs/фото 1.webp")
    engine = kit.FakeEngine()
    assert run(world, params, engine) == EXIT_OK
    assert engine.calls[0]["output_format"] == "webp"
    assert engine.calls[0]["quality"] == world.settings.webp_quality
    head = world.s3.head_object(Bucket=params.output_bucket, Key=params.output_key)
    assert head["ContentType"] == "image/webp"
    assert head["Metadata"]["source-key"] == "uploads/%D1%84%D0%BE%D1%82%D0%BE 1.jpg"
    payload = world.notifications()[0]["payload"]
    assert payload["input"]["format"] == "jpeg" and payload["output"]["format"] == "webp"


def test_format_follows_output_key_extension_when_not_asked(world, kit):
    params = world.submitted_job("job-jpg", "uploads/a.jpeg", kit.image(8, 8, "JPEG"), output_key="outputs/a.jpg")
    engine = kit.FakeEngine()
    assert run(world, params, engine) == EXIT_OK
    assert engine.calls[0]["output_format"] == "jpeg"
    assert engine.calls[0]["quality"] == world.settings.jpeg_quality


def test_undecodable_image_fails_permanently_with_one_notification(world, kit):
    params = world.submitted_job("job-bad", "uploads/bad.png", b"\x89PNG\r\n\x1a\n but not really a png")
    assert run(world, params, kit.FakeEngine()) == EXIT_PERMANENT_FAILURE
    record = world.store.get("job-bad")
    assert record.state is JobState.FAILED and record.attributes["error_code"] == "UNDECODABLE_IMAGE"
    notes = world.notifications()
    assert kit.event_types(notes) == ["upscale.failed"]
    payload = notes[0]["payload"]
    validate_notification(payload)
    assert payload["error"]["code"] == "UNDECODABLE_IMAGE" and payload["error"]["retryable"] is False
    assert payload["output"] is None and payload["presigned_url"] is None
    assert payload["durations"]["download"] is not None and payload["durations"]["upload"] is None
    assert "Contents" not in world.s3.list_objects_v2(Bucket=params.output_bucket)


def test_deleted_input_version_is_input_missing(world, kit):
    params = world.submitted_job("job-gone", "uploads/gone.png", kit.image())
    world.s3.delete_object(Bucket=params.input_bucket, Key=params.input_key, VersionId=params.input_version)
    engine = kit.FakeEngine()
    assert run(world, params, engine) == EXIT_PERMANENT_FAILURE
    assert engine.calls == []
    assert world.store.get("job-gone").attributes["error_code"] == "INPUT_MISSING"
    assert [n["payload"]["error"]["code"] for n in world.notifications()] == ["INPUT_MISSING"]


def test_pinned_version_is_what_gets_upscaled(world, kit):
    params = world.submitted_job("job-pin", "uploads/p.png", kit.image(10, 10))
    world.put_input("uploads/p.png", kit.image(30, 30))  # a newer upload of the same key: its own job
    assert run(world, params, kit.FakeEngine()) == EXIT_OK
    assert world.notifications()[0]["payload"]["input"]["width"] == 10


@pytest.mark.parametrize("make_failure, code", [
    (lambda world: {"engine_error": EngineOutOfMemoryError("still OOM at 64px tiles")}, "OUT_OF_MEMORY"),
    (lambda world: {"engine_error": EngineError("CUDA failure")}, "INFERENCE_ERROR"),
    (lambda world: {"s3": FlakyS3(world.s3, "get_object")}, "STORAGE_ERROR"),
    (lambda world: {"s3": FlakyS3(world.s3, "put_object", code="InternalError", status=500)}, "STORAGE_ERROR"),
])
def test_transient_failure_leaves_job_running_then_the_last_attempt_fails_it(world, kit, make_failure, code):
    params = world.submitted_job("job-flaky", "uploads/f.png", kit.image())
    failure = make_failure(world)
    engine = kit.FakeEngine(fail_with=failure.get("engine_error"))

    assert run(world, params, engine, attempt=1, s3=failure.get("s3")) == EXIT_RETRYABLE
    assert world.store.get("job-flaky").state is JobState.RUNNING
    assert world.notifications() == []

    last = world.settings.job_attempts
    assert run(world, params, engine, attempt=last, s3=failure.get("s3")) == EXIT_PERMANENT_FAILURE
    record = world.store.get("job-flaky")
    assert record.state is JobState.FAILED and record.attributes["error_code"] == code
    assert record.attributes["attempts"] == 2
    notes = world.notifications()
    assert kit.event_types(notes) == ["upscale.failed"]
    assert notes[0]["payload"]["error"] == {"code": code, "message": notes[0]["payload"]["error"]["message"],
                                            "retryable": True}


def test_retry_of_running_job_succeeds(world, kit):
    params = world.submitted_job("job-retry", "uploads/r.png", kit.image())
    assert run(world, params, kit.FakeEngine(fail_with=EngineOutOfMemoryError("oom")), attempt=1) == EXIT_RETRYABLE
    assert run(world, params, kit.FakeEngine(), attempt=2) == EXIT_OK
    record = world.store.get("job-retry")
    assert record.state is JobState.SUCCEEDED and record.attributes["attempts"] == 2
    assert kit.event_types(world.notifications()) == ["upscale.succeeded"]


def test_output_that_cannot_be_encoded_is_permanent(world, kit):
    params = world.submitted_job("job-wide", "uploads/w.png", kit.image())
    engine = kit.FakeEngine(fail_with=OutputNotEncodableError("WebP is limited to 16383 px"))
    assert run(world, params, engine, attempt=1) == EXIT_PERMANENT_FAILURE
    assert world.notifications()[0]["payload"]["error"]["code"] == "INFERENCE_ERROR"


@pytest.mark.parametrize("state", [JobState.SUCCEEDED, JobState.FAILED])
def test_terminal_job_is_not_redone(world, kit, state):
    params = world.submitted_job("job-done", "uploads/d.png", kit.image(), state=state)
    engine = kit.FakeEngine()
    assert run(world, params, engine) == EXIT_OK
    assert engine.calls == [] and engine.preloaded == []
    assert world.store.get("job-done").state is state
    assert world.notifications() == []
    assert "Contents" not in world.s3.list_objects_v2(Bucket=params.output_bucket)


def test_job_failed_elsewhere_while_running_is_not_notified_twice(world, kit):
    params = world.submitted_job("job-race", "uploads/race.png", kit.image())
    engine = kit.FakeEngine(during_upscale=lambda: world.store.transition("job-race", JobState.FAILED))
    assert run(world, params, engine) == EXIT_OK
    assert world.store.get("job-race").state is JobState.FAILED
    assert world.notifications() == []


def test_job_not_yet_submitted_is_waited_for_then_retried(world, kit):
    params = world.submitted_job("job-early", "uploads/e.png", kit.image(), state=JobState.ACCEPTED)
    sleeps: list[float] = []
    engine = kit.FakeEngine()
    assert run(world, params, engine, sleeps=sleeps) == EXIT_RETRYABLE
    assert len(sleeps) >= 10 and engine.calls == []
    assert world.store.get("job-early").state is JobState.ACCEPTED


def test_job_without_record_is_not_run(world, kit):
    params = world.submitted_job("job-x", "uploads/x.png", kit.image())
    params = type(params)(**{**{f: getattr(params, f) for f in params.__slots__}, "job_id": "no-such-job"})
    engine = kit.FakeEngine()
    assert run(world, params, engine) == EXIT_PERMANENT_FAILURE
    assert engine.calls == [] and world.notifications() == []


def test_sigterm_exits_retryable_without_terminal_write(world, kit):
    params = world.submitted_job("job-term", "uploads/t.png", kit.image())
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    install_signal_handlers()
    try:
        engine = kit.FakeEngine(during_upscale=lambda: os.kill(os.getpid(), signal.SIGTERM))
        assert run(world, params, engine) == EXIT_RETRYABLE
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert world.store.get("job-term").state is JobState.RUNNING
    assert world.notifications() == []


def test_batch_failed_event_after_success_sends_no_second_notification(world, kit):
    from functions.notifier.batch_failure import handle_batch_state_change

    params = world.submitted_job("job-late", "uploads/late.png", kit.image())
    assert run(world, params, kit.FakeEngine()) == EXIT_OK
    # e.g. the container was killed after reporting, or EventBridge delivered a stale event
    event = {"source": "aws.batch", "detail-type": "Batch Job State Change",
             "detail": {"jobId": "b-1", "jobName": "upscale-job-late", "status": "FAILED",
                        "statusReason": "Host EC2 (instance i-1) terminated.",
                        "container": {"environment": [{"name": k, "value": v}
                                                      for k, v in params.to_environment().items()]}}}
    outcome = handle_batch_state_change(event, store=world.store, notifier=world.notifier)
    assert outcome.action == "already_terminal"
    assert world.store.get("job-late").state is JobState.SUCCEEDED
    assert kit.event_types(world.notifications()) == ["upscale.succeeded"]


def _throttled(operation):
    return ClientError({"Error": {"Code": "Throttling", "Message": "injected"},
                        "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)


def test_publish_is_retried_after_the_terminal_write(world, kit):
    class FlakyNotifier:
        def __init__(self, inner, failures):
            self.inner, self.failures = inner, failures

        def publish(self, notification):
            if self.failures:
                self.failures -= 1
                raise _throttled("Publish")
            return self.inner.publish(notification)

    params = world.submitted_job("job-pub", "uploads/pub.png", kit.image())
    sleeps: list[float] = []
    code = run_job(params, settings=world.settings, engine=kit.FakeEngine(), s3=world.s3, store=world.store,
                   notifier=FlakyNotifier(world.notifier, failures=2), sleep=sleeps.append)
    assert code == EXIT_OK and sleeps == [2.0, 4.0]
    assert kit.event_types(world.notifications()) == ["upscale.succeeded"]

    params = world.submitted_job("job-nopub", "uploads/nopub.png", kit.image())
    engine = kit.FakeEngine()
    code = run_job(params, settings=world.settings, engine=engine, s3=world.s3, store=world.store,
                   notifier=FlakyNotifier(world.notifier, failures=99), sleep=lambda s: None)
    # The job succeeded, but SNS never took the message: it waits on the record and Batch retries.
    assert code == EXIT_RETRYABLE
    record = world.store.get("job-nopub")
    assert record.state is JobState.SUCCEEDED and record.attributes["notified"] is False
    assert world.notifications() == []

    # The retry does not redo the job: it publishes the stored message, exactly once.
    assert run(world, params, engine, attempt=2) == EXIT_OK
    assert len(engine.calls) == 1
    notes = world.notifications()
    assert kit.event_types(notes) == ["upscale.succeeded"]
    assert notes[0]["payload"]["output"]["key"] == params.output_key
    assert world.store.get("job-nopub").attributes["notified"] is True
    assert run(world, params, engine, attempt=3) == EXIT_OK
    assert world.notifications() == []


def test_transient_failure_recording_success_is_retried(world, kit):
    class FlakyStore:
        def __init__(self, inner):
            self.inner = inner

        def transition(self, job_id, target, **kwargs):
            if target is JobState.SUCCEEDED:
                raise _throttled("UpdateItem")
            return self.inner.transition(job_id, target, **kwargs)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    params = world.submitted_job("job-rec", "uploads/rec.png", kit.image())
    code = run_job(params, settings=world.settings, engine=kit.FakeEngine(), s3=world.s3,
                   store=FlakyStore(world.store), notifier=world.notifier, sleep=lambda s: None)
    assert code == EXIT_RETRYABLE
    assert world.store.get("job-rec").state is JobState.RUNNING and world.notifications() == []
    assert run(world, params, kit.FakeEngine(), attempt=2) == EXIT_OK
    assert kit.event_types(world.notifications()) == ["upscale.succeeded"]


def test_intake_warnings_reach_the_success_notification(world, kit):
    params = world.submitted_job("job-warn", "uploads/anim.png", kit.image(24, 16))
    world.store.update_attributes("job-warn", {"intake_warnings": ["Only the first frame of 3 was upscaled."]})

    assert run(world, params, kit.FakeEngine()) == EXIT_OK

    payload = world.notifications()[0]["payload"]
    assert payload["warnings"][0] == "Only the first frame of 3 was upscaled."
