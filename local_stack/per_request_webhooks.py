"""Per-request webhooks on the local stack, as the CDK stack deploys them (infra/constructs/webhook_delivery.py).

The delivery queue subscribed to the topic with raw message delivery, its DLQ, and the signing secret (a
fresh `whsec_...` per run) in the emulator's Secrets Manager; the stack runs the real delivery handler over
the queue like its other Lambdas. Receivers on 127.0.0.1 over http are allowed here only
(Settings.webhook_allow_local).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from common import aws
from common.settings import Settings
from functions.webhooks import retry
from functions.webhooks.signing import generate_secret
from local_stack.event_source import MappingConfig
from local_stack.resources import QueueConfig, create_queue

WEBHOOKS_HANDLER = "functions.webhooks.handler:lambda_handler"
# The delivery queue's event source as deployed: batches of BATCH_SIZE, no window (one poller here).
DELIVERY_MAPPING = MappingConfig(batch_size=retry.BATCH_SIZE, batching_window_seconds=0.0, pollers=1)


@dataclass(frozen=True, slots=True)
class DeliveryResources:
    queue_url: str
    queue_arn: str
    dlq_url: str
    secret_arn: str
    secret: str  # the signing secret, `whsec_...`: what local receivers verify with


def create_delivery_resources(settings: Settings, topic_arn: str) -> DeliveryResources:
    sqs = aws.client("sqs", settings)
    dlq_url, dlq_arn = create_queue(sqs, f"{settings.app_name}-webhook-delivery-dlq",
                                    {"MessageRetentionPeriod": str(QueueConfig().dlq_retention_seconds)})
    queue_url, queue_arn = create_queue(sqs, f"{settings.app_name}-webhook-delivery", {
        "VisibilityTimeout": str(retry.QUEUE_VISIBILITY_SECONDS),
        "MessageRetentionPeriod": str(retry.QUEUE_RETENTION_SECONDS),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(retry.MAX_RECEIVE_COUNT)}),
    })
    aws.client("sns", settings).subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn,
                                          Attributes={"RawMessageDelivery": "true"})
    secret = generate_secret()
    secret_arn = aws.client("secretsmanager", settings).create_secret(
        Name=f"{settings.app_name}-webhook-signing", SecretString=secret)["ARN"]
    return DeliveryResources(queue_url=queue_url, queue_arn=queue_arn, dlq_url=dlq_url,
                             secret_arn=str(secret_arn), secret=secret)
