"""Work DLQ (SQS) -> settle each dead item through its job record (partial batch failures keep the unsettled)."""

from __future__ import annotations

from dataclasses import asdict
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from common import aws
from common.lifecycle import JobLifecycle
from common.settings import Settings
from common.work_queue import WorkQueue

from .dead_items import settle_dead_item

logger = Logger(service="upscaler-notifier")
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@cache
def get_parts() -> tuple[JobLifecycle, WorkQueue]:
    settings = Settings.from_env()
    queue = WorkQueue(sqs_client=aws.client("sqs", settings), queue_url=settings.work_queue_url)
    return JobLifecycle.from_settings(settings), queue


def record_handler(record: SQSRecord) -> None:
    lifecycle, queue = get_parts()
    try:
        outcome = settle_dead_item(record.body, lifecycle=lifecycle, send=queue.send)
    except Exception as exc:
        logger.info("dead work item kept for later", extra={"reason": str(exc), "sqs_message_id": record.message_id})
        raise
    logger.info("dead work item settled", extra={**asdict(outcome), "sqs_message_id": record.message_id})


@logger.inject_lambda_context(log_event=False, clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
