"""Per-request webhooks: notification topic -> SQS queue (raw delivery) -> delivery Lambda -> the job's URL.

The Lambda signs each POST with the deployment's secret (Secrets Manager), retries with backoff for up to
24 hours by changing the message's visibility, then moves the message to the DLQ itself (an alarm
watches it). It may read job records, the secret and its two queues, and nothing else. It runs outside
any VPC; the VPC's CIDR is refused anyway (UPSCALER_WEBHOOK_BLOCKED_CIDRS, set by the stack for every
component), so that stays true if it ever moves into one. Shapes: functions/webhooks/retry.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from common.settings import env_var
from functions.webhooks import retry
from functions.webhooks.signing import GENERATED_KEY_BYTES
from infra.constructs.lambdas import PythonFunction
from infra.constructs.nag import acknowledge
from infra.constructs.notifications import dead_letter_queue

WEBHOOKS_HANDLER = "functions.webhooks.handler.lambda_handler"
MAX_CONCURRENCY = 10  # deliveries in flight at once (the event source's maximum concurrency)
# Secrets Manager makes the secret: alphanumerics, which are base64 digits, 4 characters per 3 key bytes.
GENERATED_SECRET_CHARACTERS = 4 * -(-GENERATED_KEY_BYTES // 3)


class WebhookDelivery(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, environment: Mapping[str, str],
                 code: lambda_.Code, layers: list[lambda_.ILayerVersion], topic: sns.ITopic,
                 table: dynamodb.ITable, memory_mib: int, log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = dead_letter_queue(self, "DeadLetterQueue")
        acknowledge(self.dead_letter_queue, "AwsSolutions-SQS3",
                    "This queue is itself the dead-letter queue of the webhook delivery queue.")
        self.queue = sqs.Queue(
            self, "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(retry.QUEUE_VISIBILITY_SECONDS),
            retention_period=Duration.seconds(retry.QUEUE_RETENTION_SECONDS),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue,
                                                  max_receive_count=retry.MAX_RECEIVE_COUNT),
        )
        # Raw delivery: the message body is the notification JSON exactly as published, which is what is POSTed.
        topic.add_subscription(subscriptions.SqsSubscription(self.queue, raw_message_delivery=True))

        self.secret = secretsmanager.Secret(
            self, "SigningSecret",
            description="Signs per-request webhooks (Standard Webhooks); space-separated secrets during a rotation",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=GENERATED_SECRET_CHARACTERS, exclude_punctuation=True, include_space=False),
        )
        acknowledge(self.secret, "AwsSolutions-SMG4",
                    "Rotation is coordinated with the webhook receivers, by hand (docs/webhooks.md): a new "
                    "secret is added beside the old one, and the old one removed once receivers use the new.")

        own = {env_var("webhook_secret_arn"): self.secret.secret_arn,
               env_var("webhook_dlq_url"): self.dead_letter_queue.queue_url}
        self.handler = PythonFunction(
            self, "Handler",
            handler=WEBHOOKS_HANDLER,
            description="Delivers notifications to per-request webhook URLs (signed, retried, SSRF-checked)",
            code=code, layers=layers, environment={**environment, **own}, service_name="upscaler-webhooks",
            timeout=Duration.seconds(retry.FUNCTION_TIMEOUT_SECONDS), memory_mib=memory_mib,
            log_retention=log_retention,
        )
        self.function = self.handler.function
        role = self.handler.role
        role.add_to_policy(iam.PolicyStatement(sid="ReadJobRecords", actions=["dynamodb:BatchGetItem"],
                                               resources=[table.table_arn]))
        role.add_to_policy(iam.PolicyStatement(sid="ReadSigningSecret", actions=["secretsmanager:GetSecretValue"],
                                               resources=[self.secret.secret_arn]))
        role.add_to_policy(iam.PolicyStatement(sid="DeadLetter", actions=["sqs:SendMessage"],
                                               resources=[self.dead_letter_queue.queue_arn]))
        # Receive, delete and change visibility (the retry delay) on the delivery queue: the event source grants it.
        self.function.add_event_source(event_sources.SqsEventSource(
            self.queue, batch_size=retry.BATCH_SIZE, report_batch_item_failures=True,
            max_concurrency=MAX_CONCURRENCY))
