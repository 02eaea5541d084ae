"""EventBridge schedule -> Sweeper.run(): every job past its bound is finished or re-driven (sweep.py)."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from common import aws
from common.lifecycle import JobLifecycle
from common.settings import METRICS_NAMESPACE, Settings
from common.work_queue import WorkQueue

from .sweep import Sweeper

SERVICE = "upscaler-sweeper"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", METRICS_NAMESPACE), service=SERVICE)


@cache
def get_sweeper() -> Sweeper:
    settings = Settings.from_env()
    sqs = aws.client("sqs", settings)
    return Sweeper(lifecycle=JobLifecycle.from_settings(settings),
                   work_queue=WorkQueue(sqs_client=sqs, queue_url=settings.work_queue_url), sqs=sqs,
                   intake_queue_url=settings.intake_queue_url, intake_dlq_url=settings.intake_dlq_url)


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = get_sweeper().run()
    metrics.add_metric(name="SweptRecords", unit=MetricUnit.Count, value=report.looked)
    ended = sum(report.actions[a] for a in ("timed_out", "crashed_out", "upload_never_arrived", "intake_gave_up"))
    metrics.add_metric(name="SweptEnded", unit=MetricUnit.Count, value=ended)
    summary = {"looked": report.looked, "actions": dict(report.actions)}
    logger.info("swept", extra=summary)
    return summary
