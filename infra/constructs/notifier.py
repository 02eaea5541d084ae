"""The work DLQ -> notifier Lambda, which settles each item through its job record: FAILED (and its one
upscale.failed) when its attempts kept killing their worker, a fresh copy back on the work queue for a healthy
item that only ran out of receives; an item whose job a live worker holds stays in the DLQ (functions/notifier).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from constructs import Construct

from functions.notifier import TIMEOUT_SECONDS as NOTIFIER_TIMEOUT_SECONDS
from infra.config import InfraConfig
from infra.constructs.intake import JOB_TABLE_ACTIONS
from infra.constructs.lambdas import PythonFunction
from infra.constructs.notifications import Notifications
from infra.constructs.work_queue import WorkQueue

NOTIFIER_HANDLER = "functions.notifier.handler.lambda_handler"


class FailureNotifier(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig,
                 environment: Mapping[str, str], code: lambda_.Code, layers: list[lambda_.ILayerVersion],
                 table: dynamodb.ITable, notifications: Notifications, work_queue: WorkQueue,
                 log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        self.handler = PythonFunction(
            self, "Handler",
            handler=NOTIFIER_HANDLER,
            description="Settles the work DLQ: FAILED for items that kept killing their worker, else back to work",
            code=code, layers=layers, environment=environment, service_name="upscaler-notifier",
            timeout=Duration.seconds(NOTIFIER_TIMEOUT_SECONDS), memory_mib=config.notifier_memory_mib,
            log_retention=log_retention,
        )
        self.function = self.handler.function
        self.handler.role.add_to_policy(iam.PolicyStatement(sid="JobRecords", actions=JOB_TABLE_ACTIONS,
                                                            resources=[table.table_arn]))
        notifications.grant_publish(self.handler.role)
        work_queue.grant_redrive(self.handler.role)
        # A failed record stays in the DLQ (retention 14 days) and is retried; the DLQ alarm says so.
        self.function.add_event_source(event_sources.SqsEventSource(
            work_queue.dead_letter_queue, batch_size=10, report_batch_item_failures=True, max_concurrency=2))
        self.dead_letter_queue = work_queue.dead_letter_queue
