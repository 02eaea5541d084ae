import threading

import boto3
import pytest
from moto import mock_aws

from common.contract import JobState
from common.jobs import JobStore, dedupe_key, job_id_for, table_definition, upload_job_id


@pytest.fixture
def store():
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(**table_definition("jobs"))
        yield JobStore(dynamodb_client=ddb, table_name="jobs")


def test_dedupe_key_prefers_version_id_and_falls_back_to_etag_and_size():
    assert dedupe_key("b", "k", "v1", '"e"', 5) == "s3://b/k#v:v1"
    assert dedupe_key("b", "k", None, '"e"', 5) == "s3://b/k#e:e:5"
    assert dedupe_key("b", "k", "null", "e", 5) == "s3://b/k#e:e:5"
    assert job_id_for("s3://b/k#v:v1") == job_id_for("s3://b/k#v:v1") != job_id_for("s3://b/k#v:v2")
    assert upload_job_id("b", "k", "v1", "e", 5) == job_id_for("s3://b/k#v:v1")


def test_create_is_idempotent(store):
    assert store.create(job_id="j", dedupe="d", input_bucket="b", input_key="k", attributes={"size": 3})
    assert not store.create(job_id="j", dedupe="d", input_bucket="b", input_key="k")
    record = store.get("j")
    assert record.state is JobState.ACCEPTED
    assert record.attributes["size"] == 3


def test_update_is_conditional_and_sets_removes_and_adds(store):
    from boto3.dynamodb.conditions import Attr

    store.create(job_id="j", dedupe="d", input_bucket="b", input_key="k", attributes={"gone": "x"})
    assert not store.update("j", {"state": "QUEUED"}, condition=Attr("state").eq("RUNNING"))
    assert store.update("j", {"state": "QUEUED", "gone": None, "scale": 2.5, "nested": {"a": [1, 2]}},
                        condition=Attr("state").eq("ACCEPTED"), add={"attempts": 1})
    assert store.update("j", {}, add={"attempts": 1})
    record = store.get("j")
    assert record.state is JobState.QUEUED and "gone" not in record.attributes
    assert (record.attributes["scale"], record.attributes["nested"], record.attributes["attempts"]) == \
        (2.5, {"a": [1, 2]}, 2)


def test_update_of_unknown_job_is_refused(store):
    assert not store.update("nope", {"state": "FAILED"})


def test_exactly_one_concurrent_writer_wins_the_terminal_state(store):
    from boto3.dynamodb.conditions import Attr

    store.create(job_id="j", dedupe="d", input_bucket="b", input_key="k")
    wins = []

    def finish(target):
        if store.update("j", {"state": target}, condition=Attr("state").eq("ACCEPTED")):
            wins.append(target)

    threads = [threading.Thread(target=finish, args=(t,)) for t in ["SUCCEEDED", "FAILED"] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get("j").state == wins[0]


def test_get_many_reads_existing_items_in_batches_of_a_hundred(store):
    keys = [f"k{i}" for i in range(150)]
    for key in keys[::3]:
        store.create(job_id=key, dedupe=f"d-{key}", input_bucket="b", input_key=key)
    found = store.get_many(keys)
    assert sorted(found) == sorted(keys[::3])
    assert found["k3"]["state"] == "ACCEPTED" and found["k3"]["input_key"] == "k3"
