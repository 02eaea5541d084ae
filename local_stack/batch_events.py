"""The EventBridge "Batch Job State Change" event AWS Batch emits when a job ends FAILED."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ACCOUNT = "000000000000"
CONTAINER_EXITED = "Essential container in task exited"


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    started_at_ms: int
    stopped_at_ms: int
    exit_code: int | None  # None: the container never reported one (e.g. killed on timeout)
    reason: str | None = None
    status_reason: str = CONTAINER_EXITED


def exit_code_of(returncode: int) -> int:
    """A process return code as a container exit code: killed by signal N -> 128 + N (137 for SIGKILL)."""
    return 128 - returncode if returncode < 0 else returncode


def batch_job_failed_event(*, job_id: str, job_name: str, job_queue: str, job_definition: str, region: str,
                           environment: Mapping[str, str], attempts: Sequence[AttemptRecord],
                           created_at_ms: int, retry_attempts: int, image: str = "upscaler-worker:local",
                           ) -> dict[str, Any]:
    """The event EventBridge delivers to the notifier Lambda for a FAILED job (shape as AWS sends it)."""
    last = attempts[-1]
    status_reason = last.status_reason
    queue_arn = f"arn:aws:batch:{region}:{ACCOUNT}:job-queue/{job_queue}"
    definition_arn = f"arn:aws:batch:{region}:{ACCOUNT}:job-definition/{job_definition}:1"
    job_arn = f"arn:aws:batch:{region}:{ACCOUNT}:job/{job_id}"
    container: dict[str, Any] = {
        "image": image,
        "command": [],
        "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        "logStreamName": f"{job_definition}/default/{job_id}",
    }
    if last.exit_code is not None:
        container["exitCode"] = last.exit_code
    if last.reason:
        container["reason"] = last.reason
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Batch Job State Change",
        "source": "aws.batch",
        "account": ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [job_arn],
        "detail": {
            "jobArn": job_arn,
            "jobName": job_name,
            "jobId": job_id,
            "jobQueue": queue_arn,
            "status": "FAILED",
            "statusReason": status_reason,
            "attempts": [_attempt(a, job_definition, job_id) for a in attempts],
            "createdAt": created_at_ms,
            "retryStrategy": {"attempts": retry_attempts},
            "startedAt": attempts[0].started_at_ms,
            "stoppedAt": last.stopped_at_ms,
            "dependsOn": [],
            "jobDefinition": definition_arn,
            "parameters": {},
            "container": container,
            "tags": {},
            "propagateTags": True,
            "platformCapabilities": ["EC2"],
        },
    }


def _attempt(attempt: AttemptRecord, job_definition: str, job_id: str) -> dict[str, Any]:
    container: dict[str, Any] = {"logStreamName": f"{job_definition}/default/{job_id}"}
    if attempt.exit_code is not None:
        container["exitCode"] = attempt.exit_code
    if attempt.reason:
        container["reason"] = attempt.reason
    return {
        "container": container,
        "startedAt": attempt.started_at_ms,
        "stoppedAt": attempt.stopped_at_ms,
        "statusReason": attempt.status_reason,
    }
