"""An API job's upload flows through the same intake: the first upload is the job's, any other is its own job,
refused; a job whose upload never comes is ended by the sweeper's lifecycle call; a finished job links its result."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from api_world import ALICE, ApiWorld

from common.abandoned import fail_upload_never_arrived
from common.contract import (
    ErrorInfo,
    EventType,
    ImageInfo,
    JobState,
    Notification,
    RejectionCode,
    WorkItem,
    validate_notification,
)
from common.jobs import upload_job_id
from common.lifecycle import UPLOAD_ARRIVAL_GRACE_SECONDS, UPLOAD_UNTIL, Holder, due_for_sweep
from functions.intake.intake import JobInFlightError, Outcome


def job_of(world: ApiWorld, event: Any) -> str:
    return upload_job_id(event.bucket, event.key, event.version_id, event.etag, event.size)


def test_the_first_upload_is_the_jobs_and_is_queued_under_its_id(world: ApiWorld, png: Callable[..., bytes]) -> None:
    data = png()
    created = world.create(size=len(data), options={"model": "animevideov3", "scale": 2})
    event = world.upload(created, data)
    result = world.intake.process(event)
    assert (result.outcome, result.job_id) == (Outcome.QUEUED, created["job_id"])
    record = world.store.get(created["job_id"])
    assert record is not None and record.state is JobState.QUEUED
    assert record.attributes["caller"] == ALICE and record.attributes["input_version"] == event.version_id
    item = WorkItem.from_json(str(record.attributes["work_item"]))
    assert item.output_key == f"outputs/api/{created['job_id']}/cat.png"
    assert world.store.get(job_of(world, event)) is None  # no second record for the version

    again = world.intake.process(event)  # the S3 event delivered twice
    assert (again.outcome, again.job_id) == (Outcome.DUPLICATE, created["job_id"])
    view = world.call("GET", f"/v1/jobs/{created['job_id']}").json
    assert view["state"] == "QUEUED" and view["input"]["width"] == 32 and view["options"]["format"] == "png"


def test_a_second_upload_to_the_same_link_is_its_own_job_refused(world: ApiWorld, png: Callable[..., bytes]) -> None:
    data = png()
    created = world.create(size=len(data))
    world.intake.process(world.upload(created, data))
    second = world.upload(created, png(40, 30))
    result = world.intake.process(second)
    assert result.outcome is Outcome.REJECTED and result.job_id == job_of(world, second)
    assert result.verdict is not None and result.verdict.code is RejectionCode.UPLOAD_NOT_EXPECTED
    assert "already has its upload" in result.verdict.message
    assert world.store.get(created["job_id"]).state is JobState.QUEUED  # type: ignore[union-attr]
    (note,) = world.notifications()
    assert note["event_type"] == "upscale.rejected" and note["job_id"] == result.job_id
    assert note["error"]["code"] == "UPLOAD_NOT_EXPECTED"


def test_an_upload_after_the_job_was_cancelled_is_refused(world: ApiWorld, png: Callable[..., bytes]) -> None:
    data = png()
    created = world.create(size=len(data))
    assert world.call("DELETE", f"/v1/jobs/{created['job_id']}").json["state"] == "CANCELLED"
    late = world.upload(created, data)
    result = world.intake.process(late)
    assert result.outcome is Outcome.REJECTED and result.job_id != created["job_id"]
    assert result.verdict is not None and "ended (CANCELLED) before it arrived" in result.verdict.message
    assert [n["event_type"] for n in world.notifications()] == ["upscale.cancelled", "upscale.rejected"]


def test_an_upload_without_the_links_job_id_ends_the_job_rejected(world: ApiWorld, png: Callable[..., bytes]) -> None:
    data = png()
    created = world.create(size=len(data))
    result = world.intake.process(world.upload(created, data, **{"x-amz-meta-job-id": "0" * 32}))
    assert (result.outcome, result.job_id) == (Outcome.REJECTED, created["job_id"])
    assert result.verdict is not None and result.verdict.code is RejectionCode.UPLOAD_NOT_EXPECTED
    assert "did not come through" in result.verdict.message


def test_an_option_changed_in_the_metadata_is_judged_by_intake_as_any_upload(
        world: ApiWorld, png: Callable[..., bytes]) -> None:
    """S3 refuses such a POST (test_upload_policy); were one to arrive anyway, intake decides on what it holds."""
    data = png()
    created = world.create(size=len(data))
    result = world.intake.process(world.upload(created, data, **{"x-amz-meta-scale": "9"}))
    assert result.outcome is Outcome.REJECTED and result.job_id == created["job_id"]
    assert result.verdict is not None and result.verdict.code is RejectionCode.INVALID_OPTION


def test_an_upload_that_never_comes_is_failed_by_the_sweeper_once_its_link_and_the_grace_have_passed(
        world: ApiWorld, png: Callable[..., bytes]) -> None:
    data = png()
    created = world.create(size=len(data), options={"model": "animevideov3"})
    job_id = created["job_id"]
    record = world.store.get(job_id)
    assert record is not None
    link_end = record.number(UPLOAD_UNTIL)
    assert link_end == pytest.approx(datetime.fromisoformat(created["expires_at"]).timestamp())
    # The sweeper looks only once an upload that reached S3 in time has had its chance to pass intake.
    assert job_id not in due_for_sweep(world.store, link_end + 1)
    assert job_id in due_for_sweep(world.store, link_end + UPLOAD_ARRIVAL_GRACE_SECONDS + 1)
    finish = fail_upload_never_arrived(world.lifecycle, record)  # what the sweeper does with it then
    assert finish.won and finish.sent
    (note,) = world.notifications()
    validate_notification(note)
    assert note["event_type"] == "upscale.failed" and note["error"]["code"] == "INPUT_MISSING"
    assert note["model"] == "animevideov3"
    assert world.call("GET", f"/v1/jobs/{job_id}").json["error"]["code"] == "INPUT_MISSING"
    late = world.intake.process(world.upload(created, data))
    assert late.outcome is Outcome.REJECTED and late.job_id != job_id


def test_only_an_awaiting_job_is_accepted_and_only_once(world: ApiWorld) -> None:
    created = world.create()
    job_id = created["job_id"]
    assert world.lifecycle.accept_upload(job_id, dedupe="first", attributes={})
    assert not world.lifecycle.accept_upload(job_id, dedupe="second", attributes={})
    assert world.store.get(job_id).dedupe_key == "first"  # type: ignore[union-attr]
    assert not world.lifecycle.accept_upload("f" * 32, dedupe="x", attributes={})  # no such job


def test_a_succeeded_job_links_its_result_freshly(world: ApiWorld, png: Callable[..., bytes]) -> None:
    data = png()
    created = world.create(size=len(data), options={"model": "animevideov3", "scale": 2})
    job_id = created["job_id"]
    world.intake.process(world.upload(created, data))
    claim = world.lifecycle.claim(job_id).claim
    assert claim is not None
    record = world.store.get(job_id)
    assert record is not None
    item = WorkItem.from_json(str(record.attributes["work_item"]))
    put = world.s3.put_object(Bucket=item.output_bucket, Key=item.output_key, Body=png(64, 48))
    note = Notification(event_type=EventType.SUCCEEDED, job_id=job_id,
                        input=ImageInfo(item.input_bucket, item.input_key),
                        output=ImageInfo(item.output_bucket, item.output_key, 64, 48, "png"),
                        presigned_url="https://example.com/old-link", model="animevideov3", scale=2.0,
                        warnings=("a warning",))
    assert world.lifecycle.finish(note, JobState.SUCCEEDED, holder=Holder.CLAIM, claim=claim, attributes={
        "output_bucket": item.output_bucket, "output_key": item.output_key, "output_version": put["VersionId"],
        "output_format": "png", "output_width": 64, "output_height": 48, "output_bytes": 100}).won
    view = world.call("GET", f"/v1/jobs/{job_id}").json
    assert view["state"] == "SUCCEEDED" and view["warnings"] == ["a warning"]
    result = view["result"]
    assert result["url"] != "https://example.com/old-link"
    assert item.output_key.replace(" ", "%20") in result["url"] and f"versionId={put['VersionId']}" in result["url"]
    assert (result["width"], result["height"], result["format"]) == (64, 48, "png")
    assert view["timings"]["finished_at"] and view["error"] is None


def test_cancel_of_a_queued_job_leaves_its_work_item_to_be_dropped(world: ApiWorld, png: Callable[..., bytes]) -> None:
    data = png()
    created = world.create(size=len(data))
    world.intake.process(world.upload(created, data))
    assert world.call("DELETE", f"/v1/jobs/{created['job_id']}").json["state"] == "CANCELLED"
    claim = world.lifecycle.claim(created["job_id"])
    assert claim.outcome.value == "terminal"  # the worker drops the item
    failed = Notification(event_type=EventType.FAILED, job_id=created["job_id"], input=ImageInfo("b", "k"),
                          error=ErrorInfo("INTERNAL_ERROR", "x"))
    assert not world.lifecycle.finish(failed, JobState.FAILED, holder=Holder.ABANDONED).won


def test_two_uploads_racing_for_one_job_the_loser_is_retried_and_refused(
        world: ApiWorld, png: Callable[..., bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    data = png()
    created = world.create(size=len(data))
    event = world.upload(created, data)
    accept = world.lifecycle.accept_upload

    def another_upload_wins_first(job_id: str, *, dedupe: str, attributes: dict[str, Any]) -> bool:
        assert accept(job_id, dedupe="s3://in-test/the-other-version#v:1", attributes={})
        return accept(job_id, dedupe=dedupe, attributes=attributes)

    monkeypatch.setattr(world.lifecycle, "accept_upload", another_upload_wins_first)
    with pytest.raises(JobInFlightError, match="took another upload first"):
        world.intake.process(event)  # the SQS message returns to the queue...
    monkeypatch.undo()
    retried = world.intake.process(event)  # ...and its next delivery finds the job taken: a job of its own
    assert retried.outcome is Outcome.REJECTED and retried.job_id == job_of(world, event)
    assert retried.verdict is not None and retried.verdict.code is RejectionCode.UPLOAD_NOT_EXPECTED
