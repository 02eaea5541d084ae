"""The upload link's signed policy holds: S3's rules (local_stack.s3_post_policy) refuse a changed option, an added
field, another size, a tampered policy and a late upload; the local stack's S3 (moto server) enforces them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import requests
from api_world import ApiWorld
from botocore.config import Config

from local_stack.emulator import MotoServer
from local_stack.resources import create_bucket
from local_stack.s3_post_policy import PostRefused, check_post
from local_stack.stack import DUMMY_CREDENTIALS

SIZE = 1234


def form_of(world: ApiWorld, **options: Any) -> dict[str, str]:
    created = world.create(size=SIZE, options=options or {"model": "animevideov3", "scale": 2})
    return dict(created["upload"]["fields"])


def check(form: dict[str, str], size: int = SIZE, *, now: datetime | None = None) -> None:
    secrets = {"FOOBARKEY": "FOOBARSECRET"}  # mock_aws()'s own credentials sign the form: every check is made
    check_post(form, size, bucket="in-test", now=now or datetime.now(UTC), secret_for=lambda key: secrets[key])


def refused(form: dict[str, str], size: int = SIZE, **kwargs: Any) -> PostRefused:
    with pytest.raises(PostRefused) as caught:
        check(form, size, **kwargs)
    return caught.value


def test_the_form_as_given_with_the_declared_size_is_accepted(world: ApiWorld) -> None:
    check(form_of(world))


def test_a_changed_option_is_refused(world: ApiWorld) -> None:
    form = form_of(world)
    problem = refused({**form, "x-amz-meta-model": "x4plus"})
    assert (problem.status, problem.code) == (403, "AccessDenied")
    assert "x-amz-meta-model" in problem.message
    assert refused({**form, "x-amz-meta-scale": "4"}).code == "AccessDenied"
    assert refused({**form, "x-amz-meta-job-id": "0" * 32}).code == "AccessDenied"
    assert refused({**form, "key": form["key"] + ".other"}).code == "AccessDenied"


def test_an_added_field_is_refused(world: ApiWorld) -> None:
    problem = refused({**form_of(world), "x-amz-meta-format": "png"})
    assert problem.code == "AccessDenied" and "Extra input fields: x-amz-meta-format" in problem.message


def test_another_size_is_refused(world: ApiWorld) -> None:
    form = form_of(world)
    assert (refused(form, SIZE + 1).status, refused(form, SIZE + 1).code) == (400, "EntityTooLarge")
    assert refused(form, SIZE - 1).code == "EntityTooSmall"


def test_a_tampered_policy_is_refused(world: ApiWorld) -> None:
    form = form_of(world)
    policy = json.loads(base64.b64decode(form["policy"]))
    policy["conditions"] = [c for c in policy["conditions"] if not (isinstance(c, list)
                                                                    and c[0] == "content-length-range")]
    tampered = {**form, "policy": base64.b64encode(json.dumps(policy).encode()).decode()}
    assert refused(tampered, SIZE * 10).code == "SignatureDoesNotMatch"


def test_a_late_upload_is_refused(world: ApiWorld) -> None:
    created = world.create(size=SIZE)
    late = datetime.fromisoformat(created["expires_at"]) + timedelta(seconds=1)
    problem = refused(dict(created["upload"]["fields"]), now=late)
    assert "Policy expired" in problem.message


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    server = MotoServer()
    server.start()
    yield server.endpoint_url
    server.stop()


def test_the_local_stacks_s3_enforces_the_policy(moto_server: str) -> None:
    s3 = boto3.session.Session(aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                               aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]).client(
        "s3", region_name="us-east-1", endpoint_url=moto_server,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    create_bucket(s3, "policy-test", "us-east-1")
    post = s3.generate_presigned_post("policy-test", "uploads/api/x/a.png", Fields={"x-amz-meta-model": "x4plus"},
                                      Conditions=[{"x-amz-meta-model": "x4plus"}, ["content-length-range", 3, 3]])

    def send(fields: dict[str, str], body: bytes) -> requests.Response:
        return requests.post(post["url"], data=fields, files={"file": ("a.png", body)}, timeout=10)

    changed = send({**post["fields"], "x-amz-meta-model": "animevideov3"}, b"abc")
    assert changed.status_code == 403 and "<Code>AccessDenied</Code>" in changed.text
    larger = send(post["fields"], b"abcd")
    assert larger.status_code == 400 and "<Code>EntityTooLarge</Code>" in larger.text
    assert s3.list_objects_v2(Bucket="policy-test").get("KeyCount") == 0
    assert send(post["fields"], b"abc").status_code == 204
    head = s3.head_object(Bucket="policy-test", Key="uploads/api/x/a.png")
    assert head["ContentLength"] == 3 and head["Metadata"] == {"model": "x4plus"}
