"""EventBridge -> WorkerScaler: a schedule (self-healing: items of a dead worker come back and get a worker),
"Batch Job State Change" of a worker job that ended (its slot is freed at once), and "EC2 Spot Instance
Interruption Warning" (the workers on that instance are stopped, so they give their images back in time)."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from common import aws
from common.jobs import JobStore
from common.scaling import WorkerScaler
from common.settings import METRICS_NAMESPACE, Settings

from .events import ended_worker_environment, spot_interruption_instance

SERVICE = "upscaler-scaler"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", METRICS_NAMESPACE), service=SERVICE)


@cache
def get_scaler() -> WorkerScaler:
    settings = Settings.from_env()
    store = JobStore(dynamodb_client=aws.client("dynamodb", settings), table_name=settings.jobs_table)
    return WorkerScaler.from_settings(settings, store)


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    scaler = get_scaler()
    freed = False
    bridge_event = EventBridgeEvent(event)
    instance = spot_interruption_instance(bridge_event)
    if instance is not None:
        stopped = scaler.stop_workers_on_instance(instance)
        metrics.add_metric(name="WorkersStoppedForSpot", unit=MetricUnit.Count, value=len(stopped))
        logger.info("spot interruption warning", extra={"instance_id": instance, "stopped_jobs": stopped})
        return {"instance_id": instance, "stopped": stopped}
    environment = ended_worker_environment(bridge_event)
    if environment is not None:
        freed = scaler.worker_ended(environment)
    result = scaler.ensure()
    # The alarm on WorkerStartWaitSeconds says "jobs stuck RUNNABLE" (no GPU quota or spot capacity) in minutes.
    metrics.add_metric(name="WorkerStartWaitSeconds", unit=MetricUnit.Seconds, value=result.oldest_start_wait)
    metrics.add_metric(name="LiveWorkers", unit=MetricUnit.Count, value=result.live)
    metrics.add_metric(name="WorkersStarted", unit=MetricUnit.Count, value=len(result.started))
    summary = {"depth": result.depth, "live": result.live, "started": len(result.started), "freed_slot": freed,
               "cancelled": list(result.cancelled),
               "oldest_start_wait": round(result.oldest_start_wait, 1), "errors": list(result.errors)}
    logger.info("scaled", extra=summary)
    return summary
