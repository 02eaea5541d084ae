"""Intake Lambda: SQS batches of S3 upload events -> `Intake.process` for each, partial batch failures.

A record that raises (throttling, DynamoDB/Batch/SNS errors, a job in flight elsewhere) is reported
in `batchItemFailures`, so only that message returns to the queue (and to the DLQ after the
configured receives); the others in the batch are done.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from common.jobs import upload_job_id
from common.settings import METRICS_NAMESPACE, Settings
from functions.intake.intake import Intake, IntakeResult, JobInFlightError, Outcome
from functions.intake.s3_events import parse_body

SERVICE = "upscaler-intake"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", METRICS_NAMESPACE)

logger = Logger(service=SERVICE)
copy_config_to_registered_loggers(source_logger=logger, include={"functions.intake.intake"})
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
# A batch whose every record failed is reported like any other (all ids listed) rather than raised:
# the effect on SQS is the same, and the metrics and logs of the invocation are still flushed.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
# A record is started only while this much of the invocation is left (one record: HEAD, a 50 MB GET, a
# decode bounded by common/image_bounds, the job record, submit or copy+delete+publish: seconds). The rest
# of the batch goes back to the queue untouched instead of the whole batch timing out. The first record
# of an invocation always runs, so a short function timeout still makes progress.
RECORD_RESERVE_MS = 15_000
LEASE_MARGIN_SECONDS = 10  # beyond the invocation's end, for clocks and the kill itself


class OutOfTimeError(RuntimeError):
    """Too little of the invocation is left to start this record: it returns to the queue unprocessed."""


def deadline_guard(context: LambdaContext, handle: Callable[[SQSRecord, int], None],
                   reserve_ms: int = RECORD_RESERVE_MS) -> Callable[[SQSRecord], None]:
    """`handle(record, ms left)`, refused (OutOfTimeError: a partial batch failure) once less than `reserve_ms`
    is left."""
    started = 0

    def guarded(record: SQSRecord) -> None:
        nonlocal started
        left = context.get_remaining_time_in_millis()
        if started and left < reserve_ms:
            metrics.add_metric(name="OutOfTime", unit=MetricUnit.Count, value=1)
            logger.warning("handing message %s back: %d ms left", record.message_id, left)
            raise OutOfTimeError(f"{left} ms left in the invocation; retried from the queue")
        started += 1
        handle(record, left)

    return guarded


@cache
def get_intake() -> Intake:
    """Built once per container (clients and settings are reused across invocations)."""
    return Intake.from_settings(Settings.from_env())


@tracer.capture_method
def record_handler(record: SQSRecord, left_ms: int | None = None) -> None:
    """One SQS record; `left_ms` of the invocation bound how long a record this attempt creates stays its own
    (Lambda kills an invocation at its timeout: a retry may take the record over as soon as that has passed)."""
    lease = left_ms / 1000 + LEASE_MARGIN_SECONDS if left_ms is not None else None
    try:
        uploads = parse_body(record.body)
    except Exception:
        metrics.add_metric(name="Failed", unit=MetricUnit.Count, value=1)
        logger.exception("not an S3 event notification; it will end in the DLQ")
        raise
    if not uploads:
        logger.info("no object-created records (s3:TestEvent or other event types)")
        metrics.add_metric(name="Ignored", unit=MetricUnit.Count, value=1)
    for upload in uploads:
        job_id = upload_job_id(upload.bucket, upload.key, upload.version_id, upload.etag, upload.size)
        logger.set_correlation_id(job_id)
        logger.append_keys(job_id=job_id, s3_key=upload.key, s3_version=upload.version_id,
                           sqs_message_id=record.message_id)
        tracer.put_annotation("job_id", job_id)
        try:
            result = get_intake().process(upload, lease_seconds=lease)
        except JobInFlightError as exc:
            metrics.add_metric(name="Deferred", unit=MetricUnit.Count, value=1)
            logger.warning("retrying later: %s", exc)
            raise
        except Exception:
            metrics.add_metric(name="Failed", unit=MetricUnit.Count, value=1)
            logger.exception("intake failed; the message returns to the queue")
            raise
        _record(result)


def _record(result: IntakeResult) -> None:
    verdict = result.verdict
    logger.info("intake %s", result.outcome, extra={
        "outcome": str(result.outcome),
        "rejection_code": str(verdict.code) if verdict and verdict.code else None,
        "reason": verdict.message if verdict and not verdict.accepted else result.detail or None,
        "image": {"format": verdict.format, "width": verdict.width, "height": verdict.height,
                  "mode": verdict.mode, "frames": verdict.frames} if verdict else None,
        "workers_started": result.workers_started,
        "bytes_read": result.bytes_read,
        "validation_ms": result.validation_ms,
    })
    if verdict is not None and verdict.accepted:
        metrics.add_metric(name="Accepted", unit=MetricUnit.Count, value=1)
    if result.outcome is Outcome.QUEUED:
        metrics.add_metric(name="Queued", unit=MetricUnit.Count, value=1)
        if result.workers_started:
            metrics.add_metric(name="WorkersStarted", unit=MetricUnit.Count, value=result.workers_started)
    elif result.outcome is Outcome.REJECTED:
        metrics.add_metric(name="Rejected", unit=MetricUnit.Count, value=1)
        if verdict is not None and verdict.code:
            with single_metric(name="RejectedByReason", unit=MetricUnit.Count, value=1, namespace=NAMESPACE,
                               default_dimensions={"service": SERVICE}) as metric:
                metric.add_dimension(name="reason", value=str(verdict.code))
    elif result.outcome is Outcome.DUPLICATE:
        metrics.add_metric(name="Duplicate", unit=MetricUnit.Count, value=1)
    elif result.outcome is Outcome.SUPERSEDED:
        metrics.add_metric(name="Superseded", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="Ignored", unit=MetricUnit.Count, value=1)
    if result.validation_ms is not None:
        metrics.add_metric(name="ValidationMs", unit=MetricUnit.Milliseconds, value=result.validation_ms)
    metrics.add_metric(name="BytesRead", unit=MetricUnit.Bytes, value=result.bytes_read)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=deadline_guard(context, record_handler),
                                    processor=processor, context=context)
