"""Moto-backed job table and SNS topic with an SQS queue capturing what subscribers receive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from moto import mock_aws
from sns_capture import capture_topic, drain_notifications

from common import aws
from common.contract import JobOptions, JobState
from common.jobs import JobStore
from common.notify import Notifier
from common.settings import Settings
from local_stack.resources import create_jobs_table


@dataclass
class NotifierWorld:
    settings: Settings
    sqs: Any
    queue_url: str
    store: JobStore
    notifier: Notifier

    def notifications(self) -> list[dict[str, Any]]:
        return drain_notifications(self.sqs, self.queue_url)

    def job(self, job_id: str, state: JobState) -> None:
        self.store.create(job_id=job_id, dedupe=f"d-{job_id}", input_bucket="in", input_key=f"uploads/{job_id}.png",
                          attributes={"options": JobOptions(model="x4plus", scale=3.0).to_dict()})
        path = {JobState.ACCEPTED: [], JobState.SUBMITTED: [JobState.SUBMITTED],
                JobState.RUNNING: [JobState.SUBMITTED, JobState.RUNNING],
                JobState.SUCCEEDED: [JobState.SUBMITTED, JobState.RUNNING, JobState.SUCCEEDED],
                JobState.REJECTED: [JobState.REJECTED]}[state]
        for step in path:
            assert self.store.transition(job_id, step)


@pytest.fixture
def nworld(monkeypatch) -> NotifierWorld:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    aws.clear_cache()
    with mock_aws():
        base = Settings.from_env({}, jobs_table="jobs-notifier")
        ddb = aws.client("dynamodb", base)
        create_jobs_table(ddb, base.jobs_table)
        sns = aws.client("sns", base)
        sqs = aws.client("sqs", base)
        topic_arn, queue_url = capture_topic(sns, sqs)
        settings = base.replace(topic_arn=topic_arn)
        yield NotifierWorld(settings=settings, sqs=sqs, queue_url=queue_url,
                            store=JobStore(dynamodb_client=ddb, table_name=settings.jobs_table),
                            notifier=Notifier(sns_client=sns, topic_arn=topic_arn,
                                              upload_prefix=settings.upload_prefix))
    aws.clear_cache()
