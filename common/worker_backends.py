"""Where GPU worker jobs run: one interface, two implementations (AWS Batch, and the local stack's stand-in).

The scaler starts a worker job per worker slot, cancels one that waited for a GPU past its slot's grace
(a superseded RUNNABLE job), and, on a spot interruption warning, stops the jobs on the doomed instance so
their workers get SIGTERM and give their images back within the two-minute notice.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Sequence
from typing import Any, Protocol

from common import aws
from common.contract import ENV_WORKER_SLOT, ENV_WORKER_TOKEN
from common.settings import Settings

WORKER_JOB_PREFIX = "upscaler-worker-"
DESCRIBE_JOBS_LIMIT = 100  # Batch DescribeJobs takes at most 100 job ids
# A container instance ARN in the long format names its cluster: ...:container-instance/<cluster>/<id>
_CONTAINER_INSTANCE_ARN = re.compile(r"^arn:[^:]+:ecs:[^:]+:[^:]+:container-instance/([^/]+)/[^/]+$")


class WorkerBackend(Protocol):
    def start(self, slot: int, token: str) -> str:
        """Submit one worker job for `slot`; return the backend's job id. Raises on failure."""
        ...

    def terminate(self, job_id: str, reason: str) -> None:
        """Cancel the job if it has not started yet, else stop it (SIGTERM, then SIGKILL after the stop
        timeout). Harmless for a job that already ended."""
        ...

    def jobs_on_instance(self, instance_id: str, job_ids: Sequence[str]) -> list[str]:
        """Which of `job_ids` run (or are starting) on EC2 instance `instance_id`."""
        ...


def worker_environment(slot: int, token: str) -> dict[str, str]:
    """What a worker job gets on top of the job definition's environment."""
    return {ENV_WORKER_SLOT: str(slot), ENV_WORKER_TOKEN: token}


def worker_job_name(slot: int) -> str:
    # Batch job names: up to 128 letters, digits, hyphens and underscores.
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{WORKER_JOB_PREFIX}{slot}")[:128]


class BatchWorkerBackend:
    """AWS Batch: one job per worker slot; the slot and its token travel as environment overrides."""

    def __init__(self, *, batch_client: Any, ecs_client: Any, job_queue: str, job_definition: str) -> None:
        self._batch = batch_client
        self._ecs = ecs_client
        self._queue = job_queue
        self._definition = job_definition

    def start(self, slot: int, token: str) -> str:
        resp = self._batch.submit_job(
            jobName=worker_job_name(slot), jobQueue=self._queue, jobDefinition=self._definition,
            containerOverrides={"environment": [{"name": k, "value": v}
                                                for k, v in sorted(worker_environment(slot, token).items())]},
            tags={"upscaler:worker_slot": str(slot)}, propagateTags=True,
        )
        return str(resp["jobId"])

    def terminate(self, job_id: str, reason: str) -> None:
        # TerminateJob cancels a job that has not reached STARTING and stops one that has: ECS sends the
        # container SIGTERM, then SIGKILL after the job definition's stop timeout (AWS Batch API reference,
        # TerminateJob; ECS StopTask).
        self._batch.terminate_job(jobId=job_id, reason=reason[:255])

    def jobs_on_instance(self, instance_id: str, job_ids: Sequence[str]) -> list[str]:
        by_instance_arn: dict[str, list[str]] = {}
        for start in range(0, len(job_ids), DESCRIBE_JOBS_LIMIT):
            described = self._batch.describe_jobs(jobs=list(job_ids[start:start + DESCRIBE_JOBS_LIMIT]))["jobs"]
            for job in described:
                arn = (job.get("container") or {}).get("containerInstanceArn")
                if arn and job.get("status") in ("STARTING", "RUNNING"):
                    by_instance_arn.setdefault(str(arn), []).append(str(job["jobId"]))
        by_cluster: dict[str, list[str]] = {}
        for arn in by_instance_arn:
            match = _CONTAINER_INSTANCE_ARN.match(arn)
            if match:
                by_cluster.setdefault(match.group(1), []).append(arn)
        found: list[str] = []
        for cluster, arns in by_cluster.items():
            described = self._ecs.describe_container_instances(cluster=cluster, containerInstances=arns)
            for instance in described.get("containerInstances", []):
                if instance.get("ec2InstanceId") == instance_id:
                    found.extend(by_instance_arn.get(str(instance["containerInstanceArn"]), []))
        return sorted(found)


class LocalWorkerBackend:
    """The local stack's Batch stand-in (local_stack.batch_api), over its small JSON API on 127.0.0.1:
    POST <url>/v1/submitjob, /v1/terminatejob, /v1/describejobs, shaped like Batch's own calls."""

    def __init__(self, *, url: str, timeout: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self._timeout = timeout

    def start(self, slot: int, token: str) -> str:
        reply = self._call("submitjob", {"jobName": worker_job_name(slot),
                                         "environment": worker_environment(slot, token)})
        return str(reply["jobId"])

    def terminate(self, job_id: str, reason: str) -> None:
        self._call("terminatejob", {"jobId": job_id, "reason": reason})

    def jobs_on_instance(self, instance_id: str, job_ids: Sequence[str]) -> list[str]:
        jobs = self._call("describejobs", {"jobs": list(job_ids)})["jobs"]
        return sorted(str(j["jobId"]) for j in jobs
                      if j.get("instanceId") == instance_id and j.get("status") in ("STARTING", "RUNNING"))

    def _call(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(f"{self._url}/v1/{action}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=self._timeout) as response:
            return dict(json.loads(response.read() or b"{}"))


def make_backend(settings: Settings) -> WorkerBackend:
    if settings.job_backend == "local":
        if not settings.local_batch_url:
            raise ValueError("job_backend=local needs UPSCALER_LOCAL_BATCH_URL")
        return LocalWorkerBackend(url=settings.local_batch_url)
    return BatchWorkerBackend(batch_client=aws.client("batch", settings), ecs_client=aws.client("ecs", settings),
                              job_queue=settings.job_queue, job_definition=settings.job_definition)
