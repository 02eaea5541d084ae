"""Uploads to the intake Lambda: S3 event (upload prefix only) -> encrypted SQS queue (+ DLQ) -> Lambda.

The queue absorbs bursts and retries; the Lambda reports partial batch failures so one bad record
does not redeliver its neighbours. The event source's maximum concurrency is the throttle (it needs no
account headroom); an optional reserved concurrency is never below it, so the poller is not throttled
(throttles would count as receives and push healthy messages to the DLQ).
"""

from __future__ import annotations

from collections.abc import Mapping

import jsii
from aws_cdk import Aws, Duration
from aws_cdk import aws_batch as batch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk.interfaces import aws_s3 as s3_refs
from constructs import Construct

from common.settings import Settings
from infra.config import InfraConfig
from infra.constructs.lambdas import PythonFunction
from infra.constructs.nag import acknowledge_object_prefix
from infra.constructs.notifications import Notifications, dead_letter_queue
from infra.constructs.scaler import grant_start_workers
from infra.constructs.storage import grant_list_prefix
from infra.constructs.work_queue import WorkQueue

INTAKE_HANDLER = "functions.intake.handler.lambda_handler"
JOB_TABLE_ACTIONS = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]


class Intake(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, settings: Settings,
                 environment: Mapping[str, str], code: lambda_.Code, layers: list[lambda_.ILayerVersion],
                 input_bucket: s3.IBucket, table: dynamodb.ITable, notifications: Notifications,
                 work_queue: WorkQueue, job_queue: batch.IJobQueue, job_definition: batch.IJobDefinition,
                 log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        timeout = Duration.seconds(config.intake_timeout_seconds)
        self.dead_letter_queue = dead_letter_queue(self, "DeadLetterQueue")
        self.queue = sqs.Queue(
            self, "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(config.intake_visibility_timeout_seconds),
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue,
                                                  max_receive_count=config.intake_max_receive_count),
        )
        input_bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED, SourceBoundQueueDestination(self.queue),
            s3.NotificationKeyFilter(prefix=settings.upload_prefix),
        )

        self.handler = PythonFunction(
            self, "Handler",
            handler=INTAKE_HANDLER,
            description="Validates uploads, records jobs, queues work items and starts GPU workers",
            code=code, layers=layers, environment=environment, service_name="upscaler-intake",
            timeout=timeout, memory_mib=config.intake_memory_mib, log_retention=log_retention,
            reserved_concurrency=config.intake_reserved_concurrency,
        )
        self.function = self.handler.function
        self.function.add_event_source(event_sources.SqsEventSource(
            self.queue,
            batch_size=config.intake_batch_size,
            max_batching_window=Duration.seconds(config.intake_batch_window_seconds),
            report_batch_item_failures=True,
            max_concurrency=config.intake_max_concurrency,
        ))
        self._grant(settings=settings, input_bucket=input_bucket, table=table, notifications=notifications)
        work_queue.grant_send(self.handler.role)
        grant_start_workers(self.handler.role, scope=self, table=table, job_queue=job_queue,
                            job_definition=job_definition)

    def _grant(self, *, settings: Settings, input_bucket: s3.IBucket, table: dynamodb.ITable,
               notifications: Notifications) -> None:
        role = self.handler.role
        uploads = input_bucket.arn_for_objects(f"{settings.upload_prefix}*")
        rejected = input_bucket.arn_for_objects(f"{settings.rejected_prefix}*")
        # Read (headers via ranged GET) and move away rejected uploads: copy, then delete exactly the
        # rejected version (a newer upload of the same key survives). Nothing else in the bucket.
        role.add_to_policy(iam.PolicyStatement(
            sid="ReadAndMoveUploads",
            actions=["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging", "s3:GetObjectVersionTagging",
                     "s3:DeleteObject", "s3:DeleteObjectVersion"],
            resources=[uploads],
        ))
        role.add_to_policy(iam.PolicyStatement(
            sid="WriteRejected", actions=["s3:PutObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload"],
            resources=[rejected],
        ))
        role.add_to_policy(iam.PolicyStatement(sid="JobRecords", actions=JOB_TABLE_ACTIONS,
                                               resources=[table.table_arn]))
        notifications.grant_publish(role)
        # The newest version of an upload's key (a HEAD without a version): 404, not 403, when it was deleted.
        grant_list_prefix(role, input_bucket, settings.upload_prefix, sid="SeeMissingUploads")
        acknowledge_object_prefix(role, input_bucket, settings.upload_prefix,
                                  "Reads and moves uploads only: every object under the upload prefix.")
        acknowledge_object_prefix(role, input_bucket, settings.rejected_prefix,
                                  "Writes rejected uploads only: objects under the rejected prefix.")


@jsii.implements(s3.IBucketNotificationDestination)
class SourceBoundQueueDestination:
    """s3n.SqsDestination, with the queue policy bound to the bucket's ARN *and* account.

    SqsDestination conditions only on aws:SourceArn; a bucket name is global, so a bucket of that name
    in another account (after this one is deleted) could still send. aws:SourceAccount closes that.
    The queue is SQS-managed-SSE, so no KMS grant is needed.
    """

    def __init__(self, queue: sqs.IQueue) -> None:
        self._queue = queue

    def bind(self, scope: Construct, bucket: s3_refs.IBucketRef) -> s3.BucketNotificationDestinationConfig:
        self._queue.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal("s3.amazonaws.com")],
            actions=["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
            resources=[self._queue.queue_arn],
            conditions={"ArnLike": {"aws:SourceArn": bucket.bucket_ref.bucket_arn},
                        "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
        ))
        # The notification is configured only once the policy exists (S3 sends a test message).
        return s3.BucketNotificationDestinationConfig(arn=self._queue.queue_arn,
                                                      type=s3.BucketNotificationDestinationType.QUEUE,
                                                      dependencies=[self._queue])
