import threading

import boto3
import pytest
from moto import mock_aws

from common.contract import JobState
from common.jobs import JobStore, dedupe_key, job_id_for, table_definition


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


def test_create_is_idempotent(store):
    assert store.create(job_id="j", dedupe="d", input_bucket="b", input_key="k", attributes={"size": 3})
    assert not store.create(job_id="j", dedupe="d", input_bucket="b", input_key="k")
    record = store.get("j")
    assert record.state is JobState.ACCEPTED
    assert record.attributes["size"] == 3


def test_transitions_follow_the_state_machine(store):
    store.create(job_id="j", dedupe="d", input_bucket="b", input_key="k")
    assert not store.transition("j", JobState.RUNNING)  # must be SUBMITTED first
    assert store.transition("j", JobState.SUBMITTED, attributes={"batch_job_id": "x"})
    assert store.transition("j", JobState.RUNNING)
    assert store.transition("j", JobState.RUNNING)  # a retried attempt
    assert store.transition("j", JobState.SUCCEEDED, attributes={"output_key": "o"})
    assert not store.transition("j", JobState.FAILED)  # terminal is final
    record = store.get("j")
    assert record.state is JobState.SUCCEEDED
    assert record.attributes["attempts"] == 2
    assert record.attributes["batch_job_id"] == "x"
    assert "succeeded_at" in record.attributes


def test_transition_of_unknown_job_is_refused(store):
    assert not store.transition("nope", JobState.FAILED)


def test_exactly_one_concurrent_writer_wins_the_terminal_state(store):
    store.create(job_id="j", dedupe="d", input_bucket="b", input_key="k")
    store.transition("j", JobState.SUBMITTED)
    store.transition("j", JobState.RUNNING)
    wins = []

    def finish(target):
        if store.transition("j", target):
            wins.append(target)

    threads = [threading.Thread(target=finish, args=(t,)) for t in [JobState.SUCCEEDED, JobState.FAILED] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get("j").state is wins[0]
