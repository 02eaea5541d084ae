"""The intake Lambda against moto: S3 (versioned), DynamoDB, SNS -> SQS spy, SQS event shapes."""

from __future__ import annotations

import io
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from recording_batch import RecordingBatch, serving

from common import aws
from common.contract import (
    ATTR_EVENT_TYPE,
    ATTR_UPLOAD_PREFIX,
    JobState,
    OutputFormat,
    WorkItem,
    validate_notification,
)
from common.jobs import upload_job_id
from common.worker_backends import WORKER_JOB_PREFIX
from functions.intake import handler
from functions.intake import intake as intake_module
from functions.intake.intake import Intake

BUCKET = "upscaler-input-test"


@pytest.fixture
def run(aws_stack: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Invoke the real Lambda handler with the stack's Intake (fake submitter, counting S3)."""
    monkeypatch.setattr(handler, "get_intake", lambda: aws_stack.intake)

    def invoke(*records: dict[str, Any]) -> dict[str, Any]:
        return handler.lambda_handler({"Records": list(records)}, lambda_context)

    return invoke


@pytest.fixture
def log_stream() -> Any:
    """The Powertools logger's JSON lines (its handler keeps the stdout it was created with)."""
    stream = io.StringIO()
    previous = handler.logger.registered_handler.setStream(stream)  # type: ignore[attr-defined]
    yield stream
    handler.logger.registered_handler.setStream(previous)  # type: ignore[attr-defined]


def job_id(obj: dict[str, Any]) -> str:
    return upload_job_id(BUCKET, obj["key"], obj.get("versionId"), obj["eTag"], obj["size"])


def build_intake(stack: Any, **kwargs: Any) -> Intake:
    """Another Intake on the same stack (another invocation); kwargs: lease_seconds, clock."""
    return Intake(stack.settings, s3=stack.s3, lifecycle=stack.lifecycle, work_queue=stack.work_queue,
                  scaler=stack.scaler, **kwargs)


def object_versions(stack: Any, key: str) -> list[dict[str, Any]]:
    resp = stack.clients["s3"].list_object_versions(Bucket=BUCKET, Prefix=key)
    return [v for v in resp.get("Versions", []) if v["Key"] == key]


def test_valid_upload_is_recorded_queued_once_and_starts_one_worker(
        aws_stack: Any, run: Any, events: SimpleNamespace, corpus: dict[str, bytes], capfd: pytest.CaptureFixture,
        log_stream: io.StringIO) -> None:
    obj = aws_stack.put("uploads/holiday/beach photo.jpg", corpus["photo.jpg"],
                        metadata={"scale": "2", "format": "webp", "model": "x4plus-anime"})
    response = run(events.upload_message(obj))

    assert response == {"batchItemFailures": []}
    (item,) = aws_stack.work_queue.sent
    assert item.job_id == job_id(obj)
    assert (item.input_bucket, item.input_key, item.input_version) == (BUCKET, obj["key"], obj["versionId"])
    assert (item.output_bucket, item.output_key) == ("upscaler-output", "outputs/holiday/beach photo.webp")
    assert (str(item.options.model), item.options.scale, item.output_format) == ("x4plus-anime", 2.0,
                                                                                  OutputFormat.WEBP)
    assert (item.input_format, item.input_width, item.input_height) == ("jpeg", 96, 64)
    # the message on the queue is that item, exactly
    (message,) = aws_stack.clients["sqs"].receive_message(QueueUrl=aws_stack.work_queue.url)["Messages"]
    assert WorkItem.from_json(message["Body"]) == item
    # one upload on an idle system: one worker, now
    assert [slot for slot, _ in aws_stack.starter.started] == [0]

    record = aws_stack.store.get(item.job_id)
    assert record.state is JobState.QUEUED
    attrs = record.attributes
    assert attrs["work_item_sent"] is True
    assert (attrs["input_format"], attrs["input_width"], attrs["input_height"]) == ("jpeg", 96, 64)
    assert attrs["input_version"] == obj["versionId"]
    assert attrs["accepted_at"] <= attrs["queued_at"]
    assert aws_stack.notifications() == []  # acceptance is not a terminal event
    assert object_versions(aws_stack, obj["key"])  # the upload stays where it is: the worker reads it

    # EMF metrics and a structured log line carrying the job id as correlation id
    emf = [json.loads(line) for line in capfd.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf and emf[-1]["Queued"] in (1.0, [1.0])
    assert "ValidationMs" in emf[-1]
    logged = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    (line,) = [entry for entry in logged if entry.get("message") == "intake queued"]
    assert line["correlation_id"] == line["job_id"] == item.job_id
    assert (line["s3_key"], line["outcome"], line["bytes_read"]) == (obj["key"], "queued", len(corpus["photo.jpg"]))


def test_a_burst_starts_at_most_max_workers(aws_stack: Any, run: Any, events: SimpleNamespace,
                                            corpus: dict[str, bytes]) -> None:
    objs = [aws_stack.put(f"uploads/burst/{i}.jpg", corpus["photo.jpg"]) for i in range(12)]
    for start in range(0, 12, 4):
        assert run(*[events.upload_message(o) for o in objs[start:start + 4]]) == {"batchItemFailures": []}
    assert len(aws_stack.work_queue.sent) == 12
    assert sorted(slot for slot, _ in aws_stack.starter.started) == list(range(aws_stack.settings.max_workers))


def test_a_work_item_sent_but_not_marked_is_sent_again_by_the_retry(aws_stack: Any, run: Any,
                                                                     events: SimpleNamespace,
                                                                     corpus: dict[str, bytes]) -> None:
    """The QUEUED write won, then the send failed: the retry finds the stored item and sends it."""
    obj = aws_stack.put("uploads/send-fails.jpg", corpus["photo.jpg"])
    aws_stack.work_queue.failures.append(ClientError({"Error": {"Code": "ServiceUnavailable"}}, "SendMessage"))
    message = events.upload_message(obj)
    assert run(message) == {"batchItemFailures": [{"itemIdentifier": message["messageId"]}]}
    record = aws_stack.store.get(job_id(obj))
    assert (record.state, record.attributes["work_item_sent"]) == (JobState.QUEUED, False)

    assert run(message) == {"batchItemFailures": []}
    (item,) = aws_stack.work_queue.sent
    assert item.job_id == job_id(obj)
    assert aws_stack.store.get(job_id(obj)).attributes["work_item_sent"] is True
    assert run(message) == {"batchItemFailures": []}  # a third delivery: nothing more
    assert len(aws_stack.work_queue.sent) == 1


def test_rejected_upload_is_moved_recorded_and_notified(aws_stack: Any, run: Any, events: SimpleNamespace,
                                                        corpus: dict[str, bytes],
                                                        capfd: pytest.CaptureFixture) -> None:
    obj = aws_stack.put("uploads/report.jpg", corpus["doc.pdf"])
    assert run(events.upload_message(obj)) == {"batchItemFailures": []}

    assert aws_stack.work_queue.calls == 0
    # moved: a copy under rejected/ with the same bytes, the upload's version gone
    moved = aws_stack.clients["s3"].get_object(Bucket=BUCKET, Key="rejected/report.jpg")["Body"].read()
    assert moved == corpus["doc.pdf"]
    assert object_versions(aws_stack, obj["key"]) == []

    record = aws_stack.store.get(job_id(obj))
    assert record.state is JobState.REJECTED
    assert record.attributes["error_code"] == "UNSUPPORTED_FORMAT"
    assert record.attributes["rejected_key"] == "rejected/report.jpg"
    assert record.attributes["notified"] is True

    (envelope,) = aws_stack.notifications()
    assert envelope["MessageAttributes"][ATTR_EVENT_TYPE]["Value"] == "upscale.rejected"
    assert envelope["MessageAttributes"][ATTR_UPLOAD_PREFIX]["Value"] == "uploads/"
    message = json.loads(envelope["Message"])
    validate_notification(message)
    assert message["job_id"] == job_id(obj)
    assert message["input"]["key"] == "uploads/report.jpg"
    assert message["error"]["code"] == "UNSUPPORTED_FORMAT"
    assert "PDF" in message["error"]["message"] and "rejected/report.jpg" in message["error"]["message"]
    assert message["error"]["retryable"] is False

    emf = [json.loads(line) for line in capfd.readouterr().out.splitlines() if '"_aws"' in line]
    by_reason = [m for m in emf if "RejectedByReason" in m]
    assert by_reason and by_reason[0]["reason"] == "UNSUPPORTED_FORMAT"


@pytest.mark.parametrize(("metadata", "model", "scale"), [
    ({"scale": "16"}, "x4plus", None),  # 16 is outside the schema's 1..4: null, and the message says 16
    ({"model": "x8-ultra", "scale": "2"}, "x8-ultra", 2.0),  # an unknown model is reported as given
])
def test_an_invalid_option_is_reported_as_given_not_as_the_default(
        aws_stack: Any, run: Any, events: SimpleNamespace, corpus: dict[str, bytes], metadata: dict[str, str],
        model: str, scale: float | None) -> None:
    obj = aws_stack.put("uploads/asked.png", corpus["photo.png"], metadata=metadata)
    assert run(events.upload_message(obj)) == {"batchItemFailures": []}
    (envelope,) = aws_stack.notifications()
    message = json.loads(envelope["Message"])
    validate_notification(message)
    assert message["error"]["code"] == "INVALID_OPTION"
    assert (message["model"], message["scale"]) == (model, scale)
    assert repr(next(iter(metadata.values()))) in message["error"]["message"]


@pytest.mark.parametrize("key", [
    "uploads/with space.png",
    "uploads/a+b.png",
    "uploads/ünïcødé/фото 東京.png",
    "uploads/100%2Fpercent.png",
])
def test_odd_key_names(aws_stack: Any, run: Any, events: SimpleNamespace, corpus: dict[str, bytes],
                       key: str) -> None:
    obj = aws_stack.put(key, corpus["photo.png"])
    assert run(events.upload_message(obj)) == {"batchItemFailures": []}
    (params,) = aws_stack.work_queue.sent
    assert params.input_key == key
    assert params.output_key == "outputs/" + key.removeprefix("uploads/")


def test_odd_key_rejected_is_moved_under_the_same_name(aws_stack: Any, run: Any, events: SimpleNamespace,
                                                       corpus: dict[str, bytes]) -> None:
    obj = aws_stack.put("uploads/ä b+c%2F.gif", corpus["still.gif"])
    assert run(events.upload_message(obj)) == {"batchItemFailures": []}
    head = aws_stack.clients["s3"].head_object(Bucket=BUCKET, Key="rejected/ä b+c%2F.gif")
    assert head["ContentLength"] == len(corpus["still.gif"])


def test_s3_test_event_is_skipped(aws_stack: Any, run: Any, events: SimpleNamespace) -> None:
    assert run(events.sqs_record(events.test_event_body)) == {"batchItemFailures": []}
    assert aws_stack.work_queue.calls == 0
    assert aws_stack.s3.calls == []


def test_same_version_twice_makes_one_job(aws_stack: Any, run: Any, events: SimpleNamespace,
                                          corpus: dict[str, bytes]) -> None:
    obj = aws_stack.put("uploads/twice.webp", corpus["photo.webp"])
    # twice in one batch, then redelivered in a later batch
    assert run(events.upload_message(obj), events.upload_message(obj)) == {"batchItemFailures": []}
    reads_after_first = aws_stack.s3.bytes_read
    assert run(events.upload_message(obj)) == {"batchItemFailures": []}
    assert aws_stack.work_queue.calls == 1
    assert aws_stack.s3.bytes_read == reads_after_first, "a known duplicate costs no S3 reads"
    assert aws_stack.store.get(job_id(obj)).state is JobState.QUEUED


def test_multipart_upload_firing_two_events_makes_one_job(aws_stack: Any, run: Any, events: SimpleNamespace,
                                                          corpus: dict[str, bytes]) -> None:
    s3 = aws_stack.clients["s3"]
    key = "uploads/multipart.jpg"
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=corpus["photo.jpg"])
    done = s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    obj = {"key": key, "size": len(corpus["photo.jpg"]), "eTag": done["ETag"].strip('"'),
           "versionId": done["VersionId"]}
    assert obj["eTag"].endswith("-1")
    first = events.upload_message(obj, event_name="ObjectCreated:CompleteMultipartUpload")
    second = events.upload_message({**obj, "sequencer": "0062E99A88DC407499"}, event_name="ObjectCreated:Put")
    assert run(first) == {"batchItemFailures": []}
    assert run(second) == {"batchItemFailures": []}
    assert aws_stack.work_queue.calls == 1


def test_transient_send_failure_is_retried_without_a_second_job(aws_stack: Any, run: Any,
                                                                events: SimpleNamespace,
                                                                corpus: dict[str, bytes]) -> None:
    throttled = ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "try again"}}, "SendMessage")
    aws_stack.work_queue.failures.append(throttled)
    obj = aws_stack.put("uploads/retry.jpg", corpus["photo.jpg"])
    good = aws_stack.put("uploads/fine.png", corpus["photo.png"])
    failing, passing = events.upload_message(obj), events.upload_message(good)

    response = run(failing, passing)
    assert response == {"batchItemFailures": [{"itemIdentifier": failing["messageId"]}]}
    record = aws_stack.store.get(job_id(obj))
    assert (record.state, record.attributes["work_item_sent"]) == (JobState.QUEUED, False)
    assert record.attributes["lease_until"] == 0, "a failed attempt releases the record for its retry"
    assert [p.input_key for p in aws_stack.work_queue.sent] == ["uploads/fine.png"]

    # SQS redelivers the failed message (and, at least once, the good one again)
    assert run(failing, passing) == {"batchItemFailures": []}
    assert [p.input_key for p in aws_stack.work_queue.sent] == ["uploads/fine.png", "uploads/retry.jpg"]
    assert aws_stack.store.get(job_id(obj)).state is JobState.QUEUED
    assert aws_stack.work_queue.calls == 3  # fine once, retry.jpg failed once and succeeded once


def test_dynamodb_failure_goes_back_to_the_queue(aws_stack: Any, run: Any, events: SimpleNamespace,
                                                 corpus: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    obj = aws_stack.put("uploads/ddb.jpg", corpus["photo.jpg"])
    real_create = aws_stack.store.create

    def throttled(**_kwargs: Any) -> bool:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                          "PutItem")

    monkeypatch.setattr(aws_stack.store, "create", throttled)
    message = events.upload_message(obj)
    assert run(message) == {"batchItemFailures": [{"itemIdentifier": message["messageId"]}]}
    monkeypatch.setattr(aws_stack.store, "create", real_create)
    assert run(message) == {"batchItemFailures": []}
    assert aws_stack.work_queue.calls == 1


def test_a_record_being_processed_elsewhere_is_retried_later(aws_stack: Any, run: Any, events: SimpleNamespace,
                                                              corpus: dict[str, bytes]) -> None:
    obj = aws_stack.put("uploads/concurrent.jpg", corpus["photo.jpg"])
    # another invocation created the record a moment ago and is still working on it
    other = build_intake(aws_stack)
    assert other._claim(job_id(obj), _upload(obj), obj["size"], intake_module.default_options(aws_stack.settings),
                        None)
    message = events.upload_message(obj)
    assert run(message) == {"batchItemFailures": [{"itemIdentifier": message["messageId"]}]}
    assert aws_stack.work_queue.calls == 0

    # that invocation crashed: once its lease is over, the retry takes the record over and submits
    late = build_intake(aws_stack, clock=lambda: 2e10)
    assert late.process(_upload(obj)).outcome == "queued"
    assert aws_stack.work_queue.calls == 1


def _upload(obj: dict[str, Any]) -> Any:
    from functions.intake.s3_events import UploadEvent

    return UploadEvent(BUCKET, obj["key"], obj["size"], obj["eTag"], obj.get("versionId"), "ObjectCreated:Put")


def _outbox_lease_passes(stack: Any) -> None:
    """Time passes for the stack's intake: the failed publisher's hold on the outbox has run out."""
    from common.lifecycle import OUTBOX_LEASE_SECONDS

    stack.intake._lifecycle._clock = lambda: time.time() + OUTBOX_LEASE_SECONDS + 1


def _fail_first_publish(monkeypatch: pytest.MonkeyPatch, notifier: Any) -> None:
    """SNS throttles every try of the first publish (every publish goes through `publish_text`), then recovers."""
    from common.lifecycle import PUBLISH_ATTEMPTS

    real_publish = notifier.publish_text
    calls: list[Any] = []

    def flaky(payload: Any) -> str:
        calls.append(payload)
        if len(calls) <= PUBLISH_ATTEMPTS:
            raise ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "Publish")
        return real_publish(payload)

    monkeypatch.setattr(notifier, "publish_text", flaky)


def test_publish_failure_is_finished_by_the_retry_with_one_notification(
        aws_stack: Any, run: Any, events: SimpleNamespace, corpus: dict[str, bytes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    obj = aws_stack.put("uploads/bad.png", corpus["corrupt_crc.png"])
    notifier = aws_stack.notifier
    _fail_first_publish(monkeypatch, notifier)
    message = events.upload_message(obj)
    assert run(message) == {"batchItemFailures": [{"itemIdentifier": message["messageId"]}]}
    record = aws_stack.store.get(job_id(obj))
    assert record.state is JobState.REJECTED and record.attributes["notified"] is False

    _outbox_lease_passes(aws_stack)  # the intake queue redelivers after its visibility timeout
    assert run(message) == {"batchItemFailures": []}
    assert run(message) == {"batchItemFailures": []}  # a further duplicate publishes nothing
    (envelope,) = aws_stack.notifications()
    assert json.loads(envelope["Message"])["error"]["code"] == "CORRUPT_IMAGE"
    assert aws_stack.store.get(job_id(obj)).attributes["notified"] is True


def test_malformed_message_fails_only_itself(aws_stack: Any, run: Any, events: SimpleNamespace,
                                             corpus: dict[str, bytes]) -> None:
    bad = events.sqs_record("this is not an S3 notification")
    good = events.upload_message(aws_stack.put("uploads/ok.jpg", corpus["photo.jpg"]))
    assert run(bad, good) == {"batchItemFailures": [{"itemIdentifier": bad["messageId"]}]}
    assert aws_stack.work_queue.calls == 1


def test_keys_outside_the_upload_prefix_are_ignored(aws_stack: Any, run: Any, events: SimpleNamespace,
                                                    corpus: dict[str, bytes]) -> None:
    obj = aws_stack.put("outputs/loop.jpg", corpus["photo.jpg"])
    assert run(events.upload_message(obj)) == {"batchItemFailures": []}
    assert aws_stack.work_queue.calls == 0
    assert aws_stack.s3.calls == []


def test_object_deleted_before_intake_is_ignored(aws_stack: Any, run: Any, events: SimpleNamespace,
                                                 corpus: dict[str, bytes]) -> None:
    obj = aws_stack.put("uploads/gone.jpg", corpus["photo.jpg"])
    aws_stack.clients["s3"].delete_object(Bucket=BUCKET, Key=obj["key"], VersionId=obj["versionId"])
    assert run(events.upload_message(obj)) == {"batchItemFailures": []}
    assert aws_stack.work_queue.calls == 0
    assert aws_stack.store.get(job_id(obj)) is None


def test_an_old_version_seen_after_a_newer_upload_is_superseded_and_the_newer_kept(
        aws_stack: Any, run: Any, events: SimpleNamespace, corpus: dict[str, bytes]) -> None:
    """Finding 10 at intake: the newest upload of a key owns its output; an older version that intake sees
    only after a newer one arrived is not upscaled at all, and its client hears upscale.superseded."""
    old = aws_stack.put("uploads/same-name.jpg", corpus["notes.txt"])
    new = aws_stack.put("uploads/same-name.jpg", corpus["photo.jpg"])
    assert run(events.upload_message(old), events.upload_message(new)) == {"batchItemFailures": []}
    assert aws_stack.store.get(job_id(old)).state is JobState.SUPERSEDED
    assert aws_stack.store.get(job_id(new)).state is JobState.QUEUED
    assert [item.job_id for item in aws_stack.work_queue.sent] == [job_id(new)]
    current = aws_stack.clients["s3"].get_object(Bucket=BUCKET, Key="uploads/same-name.jpg")
    assert current["VersionId"] == new["versionId"]
    (note,) = [n for n in aws_stack.notifications() if n["payload"]["job_id"] == job_id(old)]
    assert note["payload"]["event_type"] == "upscale.superseded"
    assert new["versionId"] in note["payload"]["error"]["message"]


def test_unversioned_bucket_dedupes_on_etag_and_size(aws_stack: Any, run: Any, events: SimpleNamespace,
                                                     corpus: dict[str, bytes]) -> None:
    s3 = aws_stack.clients["s3"]
    s3.create_bucket(Bucket="plain-bucket")
    key = "uploads/plain.jpg"
    s3.put_object(Bucket="plain-bucket", Key=key, Body=corpus["photo.jpg"])
    etag = s3.head_object(Bucket="plain-bucket", Key=key)["ETag"].strip('"')
    record = events.s3_record({"key": key, "size": len(corpus["photo.jpg"]), "eTag": etag}, bucket="plain-bucket")
    message = events.sqs_record({"Records": [record]})
    assert run(message) == {"batchItemFailures": []}
    assert run(message) == {"batchItemFailures": []}
    assert aws_stack.work_queue.calls == 1
    assert aws_stack.work_queue.sent[0].input_version is None


def test_intake_from_settings_queues_and_starts_a_local_worker(
        aws_stack: Any, events: SimpleNamespace, corpus: dict[str, bytes], lambda_context: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No fake: Settings -> Intake.from_settings -> the work queue + the local Batch stand-in's queue."""
    sqs = aws_stack.clients["sqs"]
    recorder = RecordingBatch()
    with serving(recorder) as batch_url:
        settings = aws_stack.settings.replace(job_backend="local", local_batch_url=batch_url)
        for name, value in settings.to_env().items():
            monkeypatch.setenv(name, value)
        handler.get_intake.cache_clear()
        try:
            obj = aws_stack.put("uploads/local.jpg", corpus["photo.jpg"])
            response = handler.lambda_handler({"Records": [events.upload_message(obj)]}, lambda_context)
        finally:
            handler.get_intake.cache_clear()
    assert response == {"batchItemFailures": []}
    (work,) = sqs.receive_message(QueueUrl=settings.work_queue_url, MaxNumberOfMessages=10)["Messages"]
    assert WorkItem.from_json(work["Body"]).job_id == job_id(obj)
    ((job_name, environment),) = recorder.submitted
    assert job_name == f"{WORKER_JOB_PREFIX}0"
    assert environment["UPSCALER_WORKER_SLOT"] == "0"
    record = aws_stack.store.get(job_id(obj))
    assert record.state is JobState.QUEUED
    # The record stayed this invocation's for its time left (60 s here) and a margin, not a fixed 300 s: a retry
    # after a timeout takes it over as soon as the dead invocation could no longer be running.
    held_for = record.number("lease_until") - time.time()
    assert 60 - 30 < held_for <= 60 + handler.LEASE_MARGIN_SECONDS + 1
    aws.clear_cache()


def test_upload_deleted_after_acceptance_fails_the_job_once(aws_stack: Any, run: Any, events: SimpleNamespace,
                                                            corpus: dict[str, bytes]) -> None:
    """An attempt crashed after recording ACCEPTED; before the retry, the person deleted the upload."""
    obj = aws_stack.put("uploads/deleted-later.jpg", corpus["photo.jpg"])
    crashed = build_intake(aws_stack, lease_seconds=0)
    assert crashed._claim(job_id(obj), _upload(obj), obj["size"],
                          intake_module.default_options(aws_stack.settings), None)
    aws_stack.clients["s3"].delete_object(Bucket=BUCKET, Key=obj["key"], VersionId=obj["versionId"])

    assert run(events.upload_message(obj), events.upload_message(obj)) == {"batchItemFailures": []}
    record = aws_stack.store.get(job_id(obj))
    assert record.state is JobState.FAILED
    assert record.attributes["error_code"] == "INPUT_MISSING"
    (envelope,) = aws_stack.notifications()
    message = json.loads(envelope["Message"])
    validate_notification(message)
    assert (message["event_type"], message["error"]["code"]) == ("upscale.failed", "INPUT_MISSING")
    assert aws_stack.work_queue.calls == 0


def test_input_missing_failure_whose_publish_failed_is_sent_by_the_retry(
        aws_stack: Any, run: Any, events: SimpleNamespace, corpus: dict[str, bytes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    obj = aws_stack.put("uploads/gone.jpg", corpus["photo.jpg"])
    crashed = build_intake(aws_stack, lease_seconds=0)
    assert crashed._claim(job_id(obj), _upload(obj), obj["size"],
                          intake_module.default_options(aws_stack.settings), None)
    aws_stack.clients["s3"].delete_object(Bucket=BUCKET, Key=obj["key"], VersionId=obj["versionId"])
    notifier = aws_stack.notifier
    _fail_first_publish(monkeypatch, notifier)
    message = events.upload_message(obj)
    assert run(message) == {"batchItemFailures": [{"itemIdentifier": message["messageId"]}]}
    assert aws_stack.store.get(job_id(obj)).attributes["notified"] is False

    _outbox_lease_passes(aws_stack)  # the intake queue redelivers after its visibility timeout
    assert run(message) == {"batchItemFailures": []}
    assert run(message) == {"batchItemFailures": []}
    (envelope,) = aws_stack.notifications()
    assert json.loads(envelope["Message"])["error"]["code"] == "INPUT_MISSING"
    assert aws_stack.store.get(job_id(obj)).attributes["notified"] is True
