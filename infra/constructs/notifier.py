"""Jobs that die before the worker can report (spot reclaim with no retries left, OOM kill, timeout):
EventBridge "Batch Job State Change" FAILED for this queue -> notifier Lambda, which marks the job
FAILED unless it is already terminal and then publishes upscale.failed.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_batch as batch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import InfraConfig
from infra.constructs.intake import JOB_TABLE_ACTIONS
from infra.constructs.lambdas import PythonFunction
from infra.constructs.nag import acknowledge
from infra.constructs.notifications import Notifications, dead_letter_queue

NOTIFIER_HANDLER = "functions.notifier.handler.lambda_handler"


class FailureNotifier(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig,
                 environment: Mapping[str, str], code: lambda_.Code, layers: list[lambda_.ILayerVersion],
                 table: dynamodb.ITable, notifications: Notifications, job_queue: batch.IJobQueue,
                 log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        self.handler = PythonFunction(
            self, "Handler",
            handler=NOTIFIER_HANDLER,
            description="Marks Batch jobs that failed without reporting as FAILED and notifies",
            code=code, layers=layers, environment=environment, service_name="upscaler-notifier",
            timeout=Duration.seconds(30), memory_mib=config.notifier_memory_mib, log_retention=log_retention,
        )
        self.function = self.handler.function
        self.handler.role.add_to_policy(iam.PolicyStatement(sid="JobRecords", actions=JOB_TABLE_ACTIONS,
                                                            resources=[table.table_arn]))
        notifications.grant_publish(self.handler.role)

        # Events EventBridge could not deliver (after its own retries) are kept here.
        self.dead_letter_queue = dead_letter_queue(self, "DeadLetterQueue")
        acknowledge(self.dead_letter_queue, "AwsSolutions-SQS3",
                    "This queue is itself the dead-letter queue of the EventBridge rule's Lambda target.")
        self.rule = events.Rule(
            self, "BatchJobFailed",
            description="A job of the upscaler queue reached FAILED",
            event_pattern=events.EventPattern(
                source=["aws.batch"],
                detail_type=["Batch Job State Change"],
                detail={"status": ["FAILED"], "jobQueue": [job_queue.job_queue_arn]},
            ),
            targets=[targets.LambdaFunction(self.function, dead_letter_queue=self.dead_letter_queue,
                                            retry_attempts=10, max_event_age=Duration.hours(6))],
        )
