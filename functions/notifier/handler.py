"""EventBridge "Batch Job State Change" (FAILED) -> mark the job FAILED and notify, unless already terminal."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from common import aws
from common.jobs import JobStore
from common.notify import Notifier
from common.settings import Settings

from .batch_failure import handle_batch_state_change

logger = Logger(service="upscaler-notifier")


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = Settings.from_env()
    outcome = handle_batch_state_change(
        event,
        store=JobStore(dynamodb_client=aws.client("dynamodb", settings), table_name=settings.jobs_table,
                       ttl_days=settings.job_record_ttl_days),
        notifier=Notifier(sns_client=aws.client("sns", settings), topic_arn=settings.topic_arn,
                          upload_prefix=settings.upload_prefix),
    )
    result = {k: (str(v) if v is not None else None) for k, v in asdict(outcome).items()}
    logger.info("batch state change handled", extra={**result, "batch_job_id": event.get("detail", {}).get("jobId")})
    return result
