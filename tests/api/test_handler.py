"""The API Lambda at the handler level: API Gateway HTTP API events in, problem+json or models out."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from api_world import ALICE, BOB, ApiWorld

from common.contract import JobState, RejectionCode
from common.lifecycle import UPLOAD_UNTIL
from common.settings import Settings
from functions.api.handler import MAX_BODY_BYTES
from functions.intake.options import parse_options
from functions.intake.validation import file_too_large
from local_stack.api_gateway_events import jwt_authorizer

PROBLEM = "application/problem+json"


def assert_problem(reply: Any, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"] == PROBLEM
    problem = dict(reply.json)
    assert problem["status"] == status and problem["code"] == code
    assert problem["type"] == f"urn:upscaler:problem:{code}"
    assert problem["title"] and problem["detail"]
    return problem


def test_create_records_an_awaiting_job_and_binds_options_and_size_into_the_upload(world: ApiWorld) -> None:
    created = world.create(filename="../holiday cat?.png", size=2048,
                           options={"model": "animevideov3", "scale": 2.5, "format": "webp", "strength": 0.6})
    job_id = created["job_id"]
    assert created["state"] == "AWAITING_UPLOAD"
    assert created["status_url"] == f"https://abc123.execute-api.us-east-1.amazonaws.com/v1/jobs/{job_id}"
    fields = created["upload"]["fields"]
    assert fields["key"] == f"uploads/api/{job_id}/holiday cat_.png"
    assert {k: v for k, v in fields.items() if k.startswith("x-amz-meta-")} == {
        "x-amz-meta-job-id": job_id, "x-amz-meta-model": "animevideov3", "x-amz-meta-scale": "2.5",
        "x-amz-meta-format": "webp", "x-amz-meta-strength": "0.6"}
    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions = policy["conditions"]
    assert ["content-length-range", 2048, 2048] in conditions
    for name, value in fields.items():
        if name.startswith("x-amz-meta-") or name in ("key", "Content-Type"):
            assert {name: value} in conditions, name

    record = world.store.get(job_id)
    assert record is not None and record.state is JobState.AWAITING_UPLOAD
    assert record.attributes["caller"] == ALICE
    assert record.input_key == fields["key"]
    assert record.options.scale == 2.5 and record.options.strength == 0.6
    assert record.number(UPLOAD_UNTIL) == pytest.approx(
        __import__("datetime").datetime.fromisoformat(created["expires_at"]).timestamp())


def test_create_without_options_binds_the_defaults(world: ApiWorld) -> None:
    fields = world.create()["upload"]["fields"]
    defaults = parse_options({}, world.settings)
    assert not isinstance(defaults, type(None))
    assert fields["x-amz-meta-model"] == world.settings.default_model
    assert "x-amz-meta-format" not in fields  # the output follows the input, decided when it arrives


@pytest.mark.parametrize(("options", "metadata"), [
    ({"model": "x9"}, {"model": "x9"}),
    ({"scale": 5}, {"scale": "5"}),
    ({"scale": 0.5}, {"scale": "0.5"}),
    ({"format": "gif"}, {"format": "gif"}),
    ({"strength": 1.5}, {"strength": "1.5"}),
])
def test_an_invalid_option_is_refused_with_intakes_code_and_sentence(
        world: ApiWorld, options: dict[str, Any], metadata: dict[str, str]) -> None:
    reply = world.call("POST", "/v1/jobs", {"filename": "a.jpg", "content_type": "image/jpeg", "size": 10,
                                            "options": options})
    problem = assert_problem(reply, 422, str(RejectionCode.INVALID_OPTION))
    intake_says = parse_options(metadata, world.settings)
    assert problem["detail"] == intake_says.message  # type: ignore[union-attr]
    assert world.notifications() == []


def test_sizes_intake_would_refuse_are_refused_before_any_upload(world: ApiWorld) -> None:
    limit = world.settings.max_upload_bytes
    too_big = world.call("POST", "/v1/jobs", {"filename": "a.jpg", "content_type": "image/jpeg", "size": limit + 1})
    assert assert_problem(too_big, 422, "FILE_TOO_LARGE")["detail"] == file_too_large(limit + 1, world.settings).message
    empty = world.call("POST", "/v1/jobs", {"filename": "a.jpg", "content_type": "image/jpeg", "size": 0})
    assert assert_problem(empty, 422, "EMPTY_FILE")["detail"] == "The file is empty."


@pytest.mark.parametrize("body", [
    "not json",
    {"filename": "a.jpg", "size": 10},  # no content_type
    {"filename": "a.jpg", "content_type": "image/jpeg", "size": "ten"},
    {"filename": "a.jpg", "content_type": "image/jpeg", "size": 10, "colour": "blue"},
    {"filename": "a.jpg", "content_type": "not a type", "size": 10},
    {"filename": "a.jpg", "content_type": "image/jpeg", "size": 10, "options": {"scale": "big"}},
])
def test_a_malformed_request_is_a_400_problem(world: ApiWorld, body: Any) -> None:
    problem = assert_problem(world.call("POST", "/v1/jobs", body), 400, "INVALID_REQUEST")
    assert "errors" in problem or body == "not json"


def test_a_body_over_the_bound_is_refused_unread(world: ApiWorld) -> None:
    body = json.dumps({"filename": "a" * MAX_BODY_BYTES, "content_type": "image/jpeg", "size": 1})
    assert_problem(world.call("POST", "/v1/jobs", body), 413, "BODY_TOO_LARGE")


@pytest.mark.parametrize(("url", "says"), [
    ("http://hooks.example.com/x", "must use https"),
    ("https://127.0.0.1/x", "private, loopback"),
    ("https://169.254.169.254/latest/meta-data", "private, loopback"),
    ("https://user:pw@hooks.example.com/x", "user name or password"),
])
def test_a_webhook_url_that_can_never_be_delivered_is_refused(world: ApiWorld, url: str, says: str) -> None:
    reply = world.call("POST", "/v1/jobs", {"filename": "a.jpg", "content_type": "image/jpeg", "size": 10,
                                            "webhook_url": url})
    assert says in assert_problem(reply, 422, "INVALID_WEBHOOK_URL")["detail"]


def test_a_webhook_is_recorded_with_its_events(world: ApiWorld) -> None:
    created = world.create(webhook_url="https://hooks.example.com/done", webhook_events=["upscale.succeeded"])
    record = world.store.get(created["job_id"])
    assert record is not None
    assert record.attributes["webhook_url"] == "https://hooks.example.com/done"
    assert record.attributes["webhook_events"] == ["upscale.succeeded"]
    every = world.create(webhook_url="https://hooks.example.com/all")
    view = world.call("GET", f"/v1/jobs/{every['job_id']}").json
    assert view["webhook"]["events"] == ["upscale.cancelled", "upscale.failed", "upscale.rejected",
                                         "upscale.succeeded", "upscale.superseded"]
    no_url = world.call("POST", "/v1/jobs", {"filename": "a.jpg", "content_type": "image/jpeg", "size": 10,
                                             "webhook_events": ["upscale.failed"]})
    assert_problem(no_url, 400, "INVALID_REQUEST")
    unknown = world.call("POST", "/v1/jobs", {"filename": "a.jpg", "content_type": "image/jpeg", "size": 10,
                                              "webhook_url": "https://hooks.example.com/x",
                                              "webhook_events": ["upscale.started"]})
    assert_problem(unknown, 400, "INVALID_REQUEST")


def test_a_caller_sees_and_cancels_only_its_own_jobs(world: ApiWorld) -> None:
    mine = world.create(ALICE)["job_id"]
    assert world.call("GET", f"/v1/jobs/{mine}").json["state"] == "AWAITING_UPLOAD"
    for method in ("GET", "DELETE"):
        problem = assert_problem(world.call(method, f"/v1/jobs/{mine}", caller=BOB), 404, "NOT_FOUND")
        assert mine in problem["detail"]
    assert world.store.get(mine).state is JobState.AWAITING_UPLOAD  # type: ignore[union-attr]
    assert world.call("GET", "/v1/jobs", caller=BOB).json == {"jobs": [], "next_cursor": None}


def test_an_upload_jobs_record_from_s3_is_nobodys_through_the_api(world: ApiWorld, png: Any) -> None:
    world.s3.put_object(Bucket=world.settings.input_bucket, Key="uploads/direct.png", Body=png())
    from functions.intake.s3_events import UploadEvent

    head = world.s3.head_object(Bucket=world.settings.input_bucket, Key="uploads/direct.png")
    result = world.intake.process(UploadEvent(world.settings.input_bucket, "uploads/direct.png", len(png()),
                                              head["ETag"].strip('"'), head.get("VersionId"), "ObjectCreated:Put"))
    assert result.job_id
    assert_problem(world.call("GET", f"/v1/jobs/{result.job_id}"), 404, "NOT_FOUND")


def test_the_list_pages_newest_first_and_the_cursor_is_the_callers_own(world: ApiWorld) -> None:
    ids = [world.create(ALICE)["job_id"] for _ in range(5)]
    world.create(BOB)
    seen: list[str] = []
    cursor = None
    while True:
        reply = world.call("GET", "/v1/jobs", query=f"limit=2{'&cursor=' + cursor if cursor else ''}").json
        seen += [j["job_id"] for j in reply["jobs"]]
        cursor = reply["next_cursor"]
        if not cursor:
            break
        stolen = world.call("GET", "/v1/jobs", caller=BOB, query=f"cursor={cursor}")
        assert_problem(stolen, 400, "INVALID_CURSOR")
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    created = [world.store.get(i).attributes["created_at"] for i in seen]  # type: ignore[union-attr]
    assert created == sorted(created, reverse=True)
    assert_problem(world.call("GET", "/v1/jobs", query="cursor=!!!"), 400, "INVALID_CURSOR")
    assert_problem(world.call("GET", "/v1/jobs", query="limit=0"), 400, "INVALID_REQUEST")
    assert_problem(world.call("GET", "/v1/jobs", query="limit=101"), 400, "INVALID_REQUEST")


def test_cancel_before_a_worker_takes_it_publishes_one_cancelled_notification(world: ApiWorld) -> None:
    job_id = world.create(options={"model": "animevideov3", "scale": 2})["job_id"]
    reply = world.call("DELETE", f"/v1/jobs/{job_id}")
    assert reply.status == 200, reply.json
    view = reply.json
    assert view["state"] == "CANCELLED"
    assert view["error"] == {"code": "CANCELLED", "retryable": False,
                             "message": "The job was cancelled by its caller before a worker took it."}
    again = world.call("DELETE", f"/v1/jobs/{job_id}")  # idempotent: no second notification
    assert again.status == 200 and again.json["state"] == "CANCELLED"
    (note,) = world.notifications()
    assert note["event_type"] == "upscale.cancelled" and note["job_id"] == job_id
    assert note["error"]["code"] == "CANCELLED"
    assert note["model"] == "animevideov3" and note["scale"] == 2.0


@pytest.mark.parametrize("state", [JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED])
def test_a_job_a_worker_has_taken_or_that_ended_is_not_cancelled(world: ApiWorld, state: JobState) -> None:
    job_id = world.create()["job_id"]
    world.store.update(job_id, {"state": str(state)})
    problem = assert_problem(world.call("DELETE", f"/v1/jobs/{job_id}"), 409, "NOT_CANCELLABLE")
    assert problem["state"] == str(state)
    assert world.store.get(job_id).state is state  # type: ignore[union-attr]
    assert world.notifications() == []


def test_jwt_callers_are_their_issuer_and_subject(world: ApiWorld) -> None:
    issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example"
    carol = jwt_authorizer({"iss": issuer, "sub": "carol-sub", "aud": "client"})
    dave = jwt_authorizer({"iss": issuer, "sub": "dave-sub", "aud": "client"})
    body = {"filename": "a.png", "content_type": "image/png", "size": 10}
    created = world.call("POST", "/v1/jobs", body, authorizer=carol).json
    assert world.store.get(created["job_id"]).attributes["caller"] == f"{issuer}#carol-sub"  # type: ignore[union-attr]
    assert world.call("GET", f"/v1/jobs/{created['job_id']}", authorizer=carol).status == 200
    assert_problem(world.call("GET", f"/v1/jobs/{created['job_id']}", authorizer=dave), 404, "NOT_FOUND")


def test_a_request_without_an_identity_is_refused(world: ApiWorld) -> None:
    assert_problem(world.call("GET", "/v1/jobs", caller=None), 401, "UNAUTHENTICATED")
    assert_problem(world.call("POST", "/v1/jobs", {"filename": "a.png", "content_type": "image/png", "size": 1},
                              caller=None), 401, "UNAUTHENTICATED")


def test_unknown_routes_and_bad_ids_are_problems(world: ApiWorld) -> None:
    assert_problem(world.call("GET", "/v1/nothing"), 404, "NOT_FOUND")
    assert_problem(world.call("GET", "/v1/jobs/not-an-id"), 400, "INVALID_REQUEST")


def test_the_openapi_document_is_served(world: ApiWorld) -> None:
    reply = world.call("GET", "/v1/openapi.json")
    assert reply.status == 200
    assert reply.json["openapi"].startswith("3.1")
    assert set(reply.json["paths"]) == {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/openapi.json"}


def test_settings_defaults_are_what_the_api_binds(world: ApiWorld) -> None:
    assert isinstance(world.settings, Settings)
    assert file_too_large(world.settings.max_upload_bytes + 1, world.settings).code is RejectionCode.FILE_TOO_LARGE
