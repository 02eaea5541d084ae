"""Delivery queue (SQS, raw SNS notifications) -> one attempt per record; retries and dead letters by SQS.

Per record: the job record (one BatchGetItem for the batch), `delivery.deliver`, then `retry.next_step`:
done -> the record succeeds (Lambda deletes it); retry -> its visibility becomes the backoff delay and the
record is reported failed, so SQS keeps it and shows it again after that delay (partial batch responses:
https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html); dead -> sent to the DLQ
with the reason, then it succeeds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.typing import LambdaContext

from common import aws
from common.jobs import JobStore
from common.settings import Settings
from common.webhook_urls import Resolver, UrlRules, system_resolver
from functions.webhooks.delivery import deliver, read_notice
from functions.webhooks.retry import Action, Step, next_step
from functions.webhooks.sender import PinnedSender, Sender, resolver_with_deadline
from functions.webhooks.signing import SecretError, SigningKeys

logger = Logger(service="upscaler-webhooks")
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
# A rotated secret takes effect within this long (docs/webhooks.md, "Rotating the secret").
SECRET_CACHE_SECONDS = 300
MAX_REASON_CHARS = 1000  # of the failure reason carried to the DLQ as a message attribute


class RetryLater(Exception):
    """Reports the record failed: SQS shows it again once the visibility delay set for it has passed."""


@dataclass(frozen=True)
class Deps:
    """What the handler talks to, built once per execution environment (tests build their own)."""

    settings: Settings
    store: JobStore
    sqs: Any
    signing_keys: Callable[[], SigningKeys]
    send: Sender
    rules: UrlRules
    resolve: Resolver


@cache
def deps() -> Deps:
    settings = Settings.from_env()
    secrets = SecretsProvider(boto3_client=aws.client("secretsmanager", settings))

    def signing_keys() -> SigningKeys:
        value = secrets.get(settings.webhook_secret_arn, max_age=SECRET_CACHE_SECONDS)
        if not isinstance(value, str):
            raise SecretError("the webhook signing secret is not a string secret")
        return SigningKeys.parse(value)

    return Deps(settings=settings, sqs=aws.client("sqs", settings), signing_keys=signing_keys,
                store=JobStore(dynamodb_client=aws.client("dynamodb", settings), table_name=settings.jobs_table),
                send=PinnedSender(), rules=UrlRules.from_settings(settings),
                resolve=resolver_with_deadline(system_resolver))


def _job_id(body: str) -> str | None:
    try:
        return read_notice(body).job_id
    except ValueError:
        return None  # deliver() says why and dead-letters it


def handle_record(record: SQSRecord, *, jobs: Mapping[str, Mapping[str, Any]], keys: SigningKeys,
                  deps: Deps) -> Step:
    job_id = _job_id(record.body)
    attempt = deliver(record.body, jobs.get(job_id) if job_id else None, keys, deps.send, rules=deps.rules,
                      now=time.time(), resolve=deps.resolve)
    receive_count = int(record.attributes.approximate_receive_count)
    step = next_step(attempt, sent_at=int(record.attributes.sent_timestamp) / 1000, receive_count=receive_count,
                     now=time.time(), jitter=random.random())  # now: after the attempt, which takes a while
    logger.info("webhook delivery", extra={
        "job_id": job_id, "verdict": str(attempt.verdict), "status": attempt.status, "action": str(step.action),
        "reason": step.reason, "delay_seconds": step.delay_seconds, "receive_count": receive_count,
        "sqs_message_id": record.message_id})
    if step.action is Action.RETRY:
        deps.sqs.change_message_visibility(QueueUrl=record.queue_url, ReceiptHandle=record.receipt_handle,
                                           VisibilityTimeout=step.delay_seconds)
        raise RetryLater(f"retry in {step.delay_seconds}s: {step.reason}")
    if step.action is Action.DEAD:
        dead_letter(deps, record, step.reason, receive_count)
    return step


def dead_letter(deps: Deps, record: SQSRecord, reason: str, receive_count: int) -> None:
    """The message as it came (body and SNS attributes), plus why and after how many receives."""
    attributes = {name: {"DataType": value.data_type, "StringValue": value.string_value}
                  for name, value in record.message_attributes.items()
                  if value is not None and value.string_value is not None}
    attributes["failure_reason"] = {"DataType": "String", "StringValue": reason[:MAX_REASON_CHARS]}
    attributes["receive_count"] = {"DataType": "Number", "StringValue": str(receive_count)}
    deps.sqs.send_message(QueueUrl=deps.settings.webhook_dlq_url, MessageBody=record.body,
                          MessageAttributes=attributes)


@logger.inject_lambda_context(log_event=False, clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    found = deps()
    keys = found.signing_keys()  # a broken secret fails the whole batch: retried, and the Errors alarm fires
    job_ids = sorted({job_id for r in event.get("Records") or () if (job_id := _job_id(str(r.get("body"))))})
    jobs = found.store.get_many(job_ids)

    def record_handler(record: SQSRecord) -> Step:
        return handle_record(record, jobs=jobs, keys=keys, deps=found)

    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
