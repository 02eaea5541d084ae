"""The one interface for starting a GPU job, with its AWS Batch and local implementations."""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from common import aws
from common.contract import JobParameters
from common.settings import Settings


class JobSubmitter(Protocol):
    def submit(self, params: JobParameters) -> str:
        """Queue the job; return the backend's job id. Raises on failure (the caller retries)."""
        ...


class BatchJobSubmitter:
    """AWS Batch: the parameters travel as container environment overrides."""

    def __init__(self, *, batch_client: Any, job_queue: str, job_definition: str) -> None:
        self._batch = batch_client
        self._queue = job_queue
        self._definition = job_definition

    def submit(self, params: JobParameters) -> str:
        resp = self._batch.submit_job(
            jobName=batch_job_name(params.job_id),
            jobQueue=self._queue,
            jobDefinition=self._definition,
            containerOverrides={
                "environment": [{"name": k, "value": v} for k, v in sorted(params.to_environment().items())]
            },
            tags={"upscaler:job_id": params.job_id},
            propagateTags=True,
        )
        return str(resp["jobId"])


class LocalQueueJobSubmitter:
    """The local stack: the job's environment is sent to an SQS queue that the local runner drains."""

    def __init__(self, *, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self._queue_url = queue_url

    def submit(self, params: JobParameters) -> str:
        resp = self._sqs.send_message(
            QueueUrl=self._queue_url,
            MessageBody=json.dumps({"environment": params.to_environment(), "job_name": batch_job_name(params.job_id)}),
        )
        return f"local-{resp['MessageId']}"


def batch_job_name(job_id: str) -> str:
    # Batch job names: up to 128 letters, digits, hyphens and underscores.
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"upscale-{job_id}")[:128]


def make_submitter(settings: Settings) -> JobSubmitter:
    if settings.job_backend == "local":
        if not settings.local_job_queue_url:
            raise ValueError("job_backend=local needs UPSCALER_LOCAL_JOB_QUEUE_URL")
        return LocalQueueJobSubmitter(sqs_client=aws.client("sqs", settings), queue_url=settings.local_job_queue_url)
    return BatchJobSubmitter(
        batch_client=aws.client("batch", settings),
        job_queue=settings.job_queue,
        job_definition=settings.job_definition,
    )
