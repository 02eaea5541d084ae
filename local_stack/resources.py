"""Create, in the emulator, the resources the CDK stack creates, named from the same Settings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from common import aws
from common.jobs import TTL_ATTRIBUTE, table_definition
from common.settings import Settings
from common.work_queue import WORK_RETENTION_SECONDS
from functions.notifier import TIMEOUT_SECONDS as NOTIFIER_TIMEOUT_SECONDS


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """The intake queue as the CDK stack configures it (visibility timeout, redrive to the DLQ)."""

    visibility_timeout_seconds: int = 30
    max_receive_count: int = 5
    retention_seconds: int = 345_600  # 4 days, as deployed
    dlq_retention_seconds: int = 1_209_600  # 14 days: the DLQ keeps failures for inspection


@dataclass(frozen=True, slots=True)
class StackResources:
    intake_queue_url: str
    intake_queue_arn: str
    intake_dlq_url: str
    intake_dlq_arn: str
    work_queue_url: str
    work_queue_arn: str
    work_dlq_url: str
    work_dlq_arn: str
    topic_arn: str


def intake_queue_name(settings: Settings) -> str:
    return f"{settings.app_name}-intake"


def intake_dlq_name(settings: Settings) -> str:
    return f"{settings.app_name}-intake-dlq"


def work_queue_name(settings: Settings) -> str:
    return f"{settings.app_name}-work"


def work_dlq_name(settings: Settings) -> str:
    return f"{settings.app_name}-work-dlq"


def topic_name(settings: Settings) -> str:
    if settings.topic_arn:
        return settings.topic_arn.rsplit(":", 1)[-1]
    return f"{settings.app_name}-notifications"


def queue_arn(sqs: Any, queue_url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def create_queue(sqs: Any, name: str, attributes: dict[str, str] | None = None) -> tuple[str, str]:
    url = str(sqs.create_queue(QueueName=name, Attributes=attributes or {})["QueueUrl"])
    return url, queue_arn(sqs, url)


def create_resources(settings: Settings, queue_config: QueueConfig = QueueConfig()) -> StackResources:
    """Buckets, upload notification -> intake queue (+DLQ), work queue (+DLQ), jobs table, topic."""
    s3 = aws.client("s3", settings)
    sqs = aws.client("sqs", settings)
    ddb = aws.client("dynamodb", settings)
    sns = aws.client("sns", settings)

    dlq_url, dlq_arn = create_queue(
        sqs, intake_dlq_name(settings), {"MessageRetentionPeriod": str(queue_config.dlq_retention_seconds)}
    )
    intake_url, intake_arn = create_queue(
        sqs,
        intake_queue_name(settings),
        {
            "VisibilityTimeout": str(queue_config.visibility_timeout_seconds),
            "MessageRetentionPeriod": str(queue_config.retention_seconds),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(queue_config.max_receive_count)}
            ),
        },
    )
    work_dlq_url, work_dlq_arn = create_queue(
        sqs, work_dlq_name(settings), {"MessageRetentionPeriod": str(queue_config.dlq_retention_seconds),
                                       "VisibilityTimeout": str(6 * NOTIFIER_TIMEOUT_SECONDS)})
    work_url, work_arn = create_queue(sqs, work_queue_name(settings), work_queue_attributes(settings, work_dlq_arn))

    for bucket in (settings.input_bucket, settings.output_bucket):
        create_bucket(s3, bucket, settings.region)
    # Like S3 itself (and moto), this call sends an s3:TestEvent message to the queue: intake ignores it.
    s3.put_bucket_notification_configuration(
        Bucket=settings.input_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "uploads-to-intake",
                    "QueueArn": intake_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": settings.upload_prefix}]}},
                }
            ]
        },
    )

    create_jobs_table(ddb, settings.jobs_table)

    topic_arn = str(sns.create_topic(Name=topic_name(settings))["TopicArn"])
    return StackResources(
        intake_queue_url=intake_url,
        intake_queue_arn=intake_arn,
        intake_dlq_url=dlq_url,
        intake_dlq_arn=dlq_arn,
        work_queue_url=work_url,
        work_queue_arn=work_arn,
        work_dlq_url=work_dlq_url,
        work_dlq_arn=work_dlq_arn,
        topic_arn=topic_arn,
    )


def work_queue_attributes(settings: Settings, dlq_arn: str) -> dict[str, str]:
    """The work queue as the CDK stack makes it: the claim lease as visibility, the DLQ as a backstop."""
    return {
        "VisibilityTimeout": str(settings.work_visibility_seconds),
        "MessageRetentionPeriod": str(WORK_RETENTION_SECONDS),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.max_receives)}),
    }


def create_bucket(s3: Any, bucket: str, region: str) -> None:
    """A versioned bucket, as the CDK stack makes every bucket (intake keys each job on the object version)."""
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def create_jobs_table(ddb: Any, table_name: str) -> None:
    """The jobs table with its TTL attribute, as deployed."""
    ddb.create_table(**table_definition(table_name))
    ddb.update_time_to_live(
        TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )
