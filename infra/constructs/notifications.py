"""The notification topic (KMS, key rotation, TLS only) and its HTTPS webhook subscriptions.

Each webhook gets its own dead-letter queue, so messages an endpoint never accepted are kept (14 days)
and an alarm names the endpoint. Filter policies match the message attributes that
common.contract.Notification.message_attributes() publishes.
"""

from __future__ import annotations

import hashlib

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import Webhook
from infra.constructs.nag import acknowledge

DLQ_RETENTION = Duration.days(14)
SIGNATURE_VERSION = "2"

# 17 retries (2 quick, 9 backing off exponentially to 5 min, 6 at 5 min): roughly 45 minutes, inside
# SNS's one-hour ceiling for HTTP/S retry policies, before a message goes to the webhook's DLQ.
WEBHOOK_DELIVERY_POLICY = sns.DeliveryPolicy(
    healthy_retry_policy=sns.HealthyRetryPolicy(
        min_delay_target=Duration.seconds(1),
        max_delay_target=Duration.seconds(300),
        num_retries=17,
        num_min_delay_retries=2,
        num_max_delay_retries=6,
        backoff_function=sns.BackoffFunction.EXPONENTIAL,
    ),
    throttle_policy=sns.ThrottlePolicy(max_receives_per_second=10),
)


def dead_letter_queue(scope: Construct, construct_id: str, *, visibility: Duration | None = None) -> sqs.Queue:
    """An encrypted, TLS-only queue that keeps what could not be delivered for two weeks (`visibility`: for one
    that a Lambda drains)."""
    return sqs.Queue(scope, construct_id, encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
                     retention_period=DLQ_RETENTION, visibility_timeout=visibility)


class Notifications(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, webhooks: tuple[Webhook, ...]) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self, "TopicKey",
            description="Encrypts the upscaler's notification and alarm topics",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        # CloudWatch alarms publish to the (encrypted) alarm topic through this key: this account's alarms only.
        self.key.add_to_resource_policy(iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            resources=["*"],  # in a key policy "*" means this key
            conditions=cloudwatch_alarm_source(self),
        ))
        # SignatureVersion 2: messages are signed with SHA256withRSA (v1 is SHA1); sns_webhook verifies both.
        self.topic = sns.Topic(self, "Topic", display_name="Upscaler notifications", master_key=self.key,
                               enforce_ssl=True, signature_version=SIGNATURE_VERSION)
        self.webhook_dlqs: dict[str, sqs.Queue] = {}
        for hook in webhooks:
            suffix = hashlib.sha256(hook.url.encode()).hexdigest()[:8]
            dlq = dead_letter_queue(self, f"WebhookDlq{suffix}")
            acknowledge(
                dlq,
                "AwsSolutions-SQS3",
                "This queue is itself the dead-letter queue of an SNS HTTPS subscription.",
            )
            sns.Subscription(
                self, f"Webhook{suffix}",
                topic=self.topic,
                endpoint=hook.url,
                protocol=sns.SubscriptionProtocol.HTTPS,
                raw_message_delivery=False,  # the signed envelope is what receivers verify
                filter_policy=_filter_policy(hook),
                dead_letter_queue=dlq,
                delivery_policy=WEBHOOK_DELIVERY_POLICY,
            )
            self.webhook_dlqs[hook.url] = dlq

    def grant_publish(self, role: iam.IRole) -> None:
        """Publish to the topic: sns:Publish plus the two KMS calls SNS makes with the caller's rights."""
        role.add_to_principal_policy(iam.PolicyStatement(sid="PublishNotifications", actions=["sns:Publish"],
                                                         resources=[self.topic.topic_arn]))
        role.add_to_principal_policy(iam.PolicyStatement(sid="EncryptNotifications",
                                                         actions=["kms:GenerateDataKey", "kms:Decrypt"],
                                                         resources=[self.key.key_arn]))


def cloudwatch_alarm_source(scope: Construct) -> dict[str, dict[str, str]]:
    """Policy conditions that admit the CloudWatch service only on behalf of this account's alarms
    (confused-deputy protection for the key and the alarm topic)."""
    stack = Stack.of(scope)
    alarms = stack.format_arn(service="cloudwatch", resource="alarm", resource_name="*",
                              arn_format=ArnFormat.COLON_RESOURCE_NAME)
    return {"StringEquals": {"aws:SourceAccount": stack.account}, "ArnLike": {"aws:SourceArn": alarms}}


def _filter_policy(hook: Webhook) -> dict[str, sns.SubscriptionFilter] | None:
    if not hook.filter_policy:
        return None
    return {attribute: sns.SubscriptionFilter(conditions=list(values))
            for attribute, values in hook.filter_policy.items()}
