"""The work queue: one SQS message per accepted upload, drained by the GPU workers, and its DLQ.

Its visibility timeout is a claim's lease (`work_visibility_seconds`; the worker renews it while it
works on an image). Its redrive policy (`max_receives`) is only a backstop: receives count give-backs and
duplicates too, and real attempts are counted on the job record; the notifier settles what lands in the DLQ
(infra/constructs/notifier.py).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from common.settings import Settings
from common.work_queue import WORK_RETENTION_SECONDS
from functions.notifier import TIMEOUT_SECONDS as NOTIFIER_TIMEOUT_SECONDS
from infra.constructs.nag import acknowledge
from infra.constructs.notifications import dead_letter_queue

# The worker gives an item back as a fresh copy (SendMessage) and renews visibility in batches.
WORKER_QUEUE_ACTIONS = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                        "sqs:SendMessage"]


class WorkQueue(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings) -> None:
        super().__init__(scope, construct_id)
        # Lambda's guidance for an SQS event source: visibility at least 6x the function's timeout.
        self.dead_letter_queue = dead_letter_queue(self, "DeadLetterQueue",
                                                   visibility=Duration.seconds(6 * NOTIFIER_TIMEOUT_SECONDS))
        acknowledge(self.dead_letter_queue, "AwsSolutions-SQS3",
                    "This queue is itself the work queue's dead-letter queue.")
        self.queue = sqs.Queue(
            self, "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(settings.work_visibility_seconds),
            retention_period=Duration.seconds(WORK_RETENTION_SECONDS),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue,
                                                  max_receive_count=settings.max_receives),
        )

    def grant_send(self, role: iam.IRole) -> None:
        """Intake: send items and read the depth (to start workers)."""
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="SendWorkItems", actions=["sqs:SendMessage", "sqs:GetQueueAttributes"],
            resources=[self.queue.queue_arn]))

    def grant_redrive(self, role: iam.IRole) -> None:
        """The notifier and the sweeper: put a fresh copy of an item back on the work queue."""
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="RedriveWorkItems", actions=["sqs:SendMessage"], resources=[self.queue.queue_arn]))

    def grant_depth(self, role: iam.IRole) -> None:
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="ReadWorkQueueDepth", actions=["sqs:GetQueueAttributes"], resources=[self.queue.queue_arn]))

    def grant_work(self, role: iam.IRole) -> None:
        """The worker: receive, delete and change visibility on this queue only."""
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="DrainWorkQueue", actions=WORKER_QUEUE_ACTIONS, resources=[self.queue.queue_arn]))
