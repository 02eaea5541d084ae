"""The container entrypoint: build the real collaborators from the environment and drain the work queue."""

from __future__ import annotations

import os
from collections.abc import Mapping

from common import aws
from common.contract import ENV_WORKER_SLOT, ENV_WORKER_TOKEN
from common.lifecycle import JobLifecycle
from common.scaling import WorkerSlots
from common.settings import Settings, SettingsError
from common.work_queue import WorkQueue

from .errors import JobInterrupted
from .item import Worker, logger
from .loop import SlotLease, run_worker
from .runtime import StopSignal, SystemClock, gpu_name


def main(env: Mapping[str, str] | None = None) -> int:
    """`python -m gpu_batch.worker`: 0 after a normal exit (idle, max age, SIGTERM), 1 if it cannot start."""
    env = os.environ if env is None else env
    stop = StopSignal()
    stop.install()
    try:
        settings = Settings.from_env(env)
        if not settings.work_queue_url:
            raise SettingsError("UPSCALER_WORK_QUEUE_URL is not set")
    except SettingsError as exc:
        logger.error("cannot start: bad worker environment", extra={"error": str(exc)})
        return 1
    logger.setLevel(settings.log_level)
    runtime_info = {"batch_job_id": env.get("AWS_BATCH_JOB_ID"), "gpu": gpu_name(), "host": env.get("HOSTNAME"),
                    "slot": env.get(ENV_WORKER_SLOT)}
    logger.append_keys(**{k: v for k, v in runtime_info.items() if v})
    logger.info("worker starting")
    try:
        from gpu_batch.engine import Engine

        lifecycle = JobLifecycle.from_settings(settings)
        store = lifecycle.store
        worker = Worker(
            settings=settings,
            engine=Engine(device="auto", settings=settings),
            s3=aws.client("s3", settings),
            lifecycle=lifecycle,
            queue=WorkQueue(sqs_client=aws.client("sqs", settings), queue_url=settings.work_queue_url),
            clock=SystemClock(),
            runtime_info=runtime_info,
            stop=stop,
        )
        slot = None
        if env.get(ENV_WORKER_SLOT) and env.get(ENV_WORKER_TOKEN):
            slot = SlotLease(WorkerSlots(store), int(env[ENV_WORKER_SLOT]), env[ENV_WORKER_TOKEN])
        run_worker(worker, slot=slot)
    except JobInterrupted:
        logger.warning("stopped before taking any item")
    return 0
