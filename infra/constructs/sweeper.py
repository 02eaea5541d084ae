"""The sweeper Lambda: every few minutes, finishes or re-drives every job left non-terminal past its bound
(functions/sweeper) through the jobs table's sparse `sweep` index, and re-drives the intake DLQ a few times."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from common.lifecycle import SWEEP_INDEX
from infra.constructs.intake import JOB_TABLE_ACTIONS
from infra.constructs.lambdas import PythonFunction
from infra.constructs.nag import acknowledge
from infra.constructs.notifications import Notifications, dead_letter_queue
from infra.constructs.work_queue import WorkQueue

SWEEPER_HANDLER = "functions.sweeper.handler.lambda_handler"
SCHEDULE = Duration.minutes(5)


class Sweeper(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, environment: Mapping[str, str],
                 code: lambda_.Code, layers: list[lambda_.ILayerVersion], table: dynamodb.ITable,
                 notifications: Notifications, work_queue: WorkQueue, intake_queue: sqs.IQueue,
                 intake_dead_letter_queue: sqs.IQueue, memory_mib: int, log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        self.handler = PythonFunction(
            self, "Handler", handler=SWEEPER_HANDLER,
            description="Finishes or re-drives every upscaling job left unfinished past its bound",
            code=code, layers=layers, environment=environment, service_name="upscaler-sweeper",
            timeout=Duration.minutes(2), memory_mib=memory_mib, log_retention=log_retention,
            reserved_concurrency=None,
        )
        self.function = self.handler.function
        role = self.handler.role
        role.add_to_policy(iam.PolicyStatement(sid="JobRecords", actions=JOB_TABLE_ACTIONS,
                                               resources=[table.table_arn]))
        role.add_to_policy(iam.PolicyStatement(sid="DueRecords", actions=["dynamodb:Query"],
                                               resources=[f"{table.table_arn}/index/{SWEEP_INDEX}"]))
        notifications.grant_publish(role)
        work_queue.grant_redrive(role)
        role.add_to_policy(iam.PolicyStatement(sid="RedriveUploads", actions=["sqs:SendMessage"],
                                               resources=[intake_queue.queue_arn]))
        role.add_to_policy(iam.PolicyStatement(
            sid="DrainIntakeDeadLetters",
            actions=["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
            resources=[intake_dead_letter_queue.queue_arn]))

        self.dead_letter_queue = dead_letter_queue(self, "DeadLetterQueue")
        acknowledge(self.dead_letter_queue, "AwsSolutions-SQS3",
                    "This queue is itself the dead-letter queue of the sweeper's EventBridge schedule.")
        self.schedule = events.Rule(
            self, "Schedule", description="Finish or re-drive upscaling jobs left unfinished past their bound",
            schedule=events.Schedule.rate(SCHEDULE),
            targets=[targets.LambdaFunction(self.function, dead_letter_queue=self.dead_letter_queue,
                                            retry_attempts=2, max_event_age=Duration.minutes(5))])
