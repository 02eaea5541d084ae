"""The container entrypoint: build the real collaborators from the environment and run one job."""

from __future__ import annotations

import os
from collections.abc import Mapping

from common import aws
from common.contract import EXIT_RETRYABLE, JobParameters
from common.jobs import JobStore
from common.notify import Notifier
from common.settings import Settings, SettingsError

from .errors import JobInterrupted
from .job import logger, run_job
from .runtime import batch_attempt, gpu_name, install_signal_handlers


def main(env: Mapping[str, str] | None = None) -> int:
    """`python -m gpu_batch.worker`. Exit codes: common.contract EXIT_* (1 = crashed before it could report)."""
    env = os.environ if env is None else env
    install_signal_handlers()
    try:
        settings = Settings.from_env(env)
        params = JobParameters.from_environment(env)
    except (SettingsError, ValueError) as exc:
        # Nothing to mark; a non-retryable exit lets the notifier Lambda close the job if it has an id.
        logger.error("cannot start: bad job environment", extra={"error": str(exc)})
        return 1
    logger.setLevel(settings.log_level)
    logger.append_keys(job_id=params.job_id)
    runtime_info = {"batch_job_id": env.get("AWS_BATCH_JOB_ID"), "gpu": gpu_name(),
                    "host": env.get("HOSTNAME")}
    logger.info("worker starting", extra={"input_uri": params.input_uri, "output_uri": params.output_uri,
                                          "options": params.options.to_dict(), **runtime_info})

    try:
        from gpu_batch.engine import Engine

        # One engine (and so one loaded model session) per process; run_job preloads the job's model.
        engine = Engine(device="auto", settings=settings)
        return run_job(
            params,
            settings=settings,
            engine=engine,
            s3=aws.client("s3", settings),
            store=JobStore(dynamodb_client=aws.client("dynamodb", settings), table_name=settings.jobs_table,
                           ttl_days=settings.job_record_ttl_days),
            notifier=Notifier(sns_client=aws.client("sns", settings), topic_arn=settings.topic_arn,
                              upload_prefix=settings.upload_prefix),
            attempt=batch_attempt(env),
            runtime_info=runtime_info,
        )
    except JobInterrupted as exc:
        logger.warning("interrupted before the job started", extra={"reason": str(exc)})
        return EXIT_RETRYABLE
