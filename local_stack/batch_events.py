"""EventBridge events the local stack delivers, shaped as AWS sends them: AWS Batch's "Batch Job State Change" when
a job ends, EC2's "Spot Instance Interruption Warning" two minutes before a spot instance is reclaimed, and the
envelope every rule's target gets (a schedule's "Scheduled Event" too)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

ACCOUNT = "000000000000"
CONTAINER_EXITED = "Essential container in task exited"


def exit_code_of(returncode: int) -> int:
    """A process return code as a container exit code: killed by signal N -> 128 + N (137 for SIGKILL)."""
    return 128 - returncode if returncode < 0 else returncode


def batch_job_state_change(*, job_id: str, job_name: str, status: str, job_queue: str, job_definition: str,
                           region: str, environment: Mapping[str, str], exit_code: int | None,
                           created_at_ms: int, started_at_ms: int, stopped_at_ms: int,
                           reason: str | None = None, image: str = "upscaler-worker:local") -> dict[str, Any]:
    """The event EventBridge delivers for a job that ended SUCCEEDED or FAILED."""
    queue_arn = f"arn:aws:batch:{region}:{ACCOUNT}:job-queue/{job_queue}"
    definition_arn = f"arn:aws:batch:{region}:{ACCOUNT}:job-definition/{job_definition}:1"
    job_arn = f"arn:aws:batch:{region}:{ACCOUNT}:job/{job_id}"
    container: dict[str, Any] = {
        "image": image,
        "command": [],
        "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        "logStreamName": f"{job_definition}/default/{job_id}",
    }
    if exit_code is not None:
        container["exitCode"] = exit_code
    if reason:
        container["reason"] = reason
    attempt = {"container": {k: v for k, v in container.items() if k in ("exitCode", "reason", "logStreamName")},
               "startedAt": started_at_ms, "stoppedAt": stopped_at_ms, "statusReason": CONTAINER_EXITED}
    return eventbridge_event("Batch Job State Change", "aws.batch", region, [job_arn], {
        "jobArn": job_arn, "jobName": job_name, "jobId": job_id, "jobQueue": queue_arn, "status": status,
        "statusReason": CONTAINER_EXITED if exit_code is not None else (reason or ""),
        "attempts": [attempt], "createdAt": created_at_ms, "retryStrategy": {"attempts": 1},
        "startedAt": started_at_ms, "stoppedAt": stopped_at_ms, "dependsOn": [],
        "jobDefinition": definition_arn, "parameters": {}, "container": container, "tags": {},
        "propagateTags": True, "platformCapabilities": ["EC2"],
    })


def spot_interruption_warning(*, instance_id: str, region: str) -> dict[str, Any]:
    """EC2's warning, two minutes before it stops the spot instance (EC2 User Guide, "Spot Instance
    interruption notices"): EventBridge delivers it once, and nothing signals the containers on it."""
    return eventbridge_event("EC2 Spot Instance Interruption Warning", "aws.ec2", region,
                             [f"arn:aws:ec2:{region}:{ACCOUNT}:instance/{instance_id}"],
                             {"instance-id": instance_id, "instance-action": "terminate"})


def eventbridge_event(detail_type: str, source: str, region: str, resources: list[str],
                      detail: dict[str, Any]) -> dict[str, Any]:
    """The envelope EventBridge delivers to a rule's target."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": source,
            "account": ACCOUNT, "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "region": region,
            "resources": resources, "detail": detail}
