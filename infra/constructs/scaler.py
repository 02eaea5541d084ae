"""The scaler Lambda: keeps GPU worker jobs following the work queue's depth (common.scaling).

Intake starts a worker right after it queues an item; this function is the self-healing half. It runs
every minute (items of a worker that died come back after their visibility timeout and get a
worker) and whenever a worker job of this queue ends (its slot is freed at once). On an EC2 spot interruption
warning it terminates the worker jobs on that instance: ECS spot draining stops only service tasks, so this is
what gives a Batch worker its SIGTERM within the two-minute notice. It publishes WorkerStartWaitSeconds, the
time the oldest submitted worker has waited for a GPU: the alarm on it says "no GPU quota or spot capacity"
within minutes.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constructs.lambdas import PythonFunction
from infra.constructs.nag import acknowledge
from infra.constructs.notifications import dead_letter_queue
from infra.constructs.work_queue import WorkQueue

SCALER_HANDLER = "functions.scaler.handler.lambda_handler"
SCHEDULE = Duration.minutes(1)
# common.scaling.WorkerSlots: all slots in one BatchGetItem, then conditional puts and updates of one.
SLOT_ACTIONS = ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]


def grant_start_workers(role: iam.IRole, *, scope: Construct, table: dynamodb.ITable, job_queue: batch.IJobQueue,
                        job_definition: batch.IJobDefinition) -> None:
    """Take worker slots (records in the jobs table), then SubmitJob of worker jobs to this queue with this
    definition, and their tags; nothing else in Batch."""
    role.add_to_principal_policy(iam.PolicyStatement(sid="WorkerSlots", actions=SLOT_ACTIONS,
                                                     resources=[table.table_arn]))
    role.add_to_principal_policy(iam.PolicyStatement(
        sid="StartWorkers", actions=["batch:SubmitJob"],
        resources=[job_queue.job_queue_arn, job_definition.job_definition_arn]))
    # A slot reused after its grace first ends its old job (still RUNNABLE for want of capacity).
    role.add_to_principal_policy(iam.PolicyStatement(
        sid="EndSupersededWorkers", actions=["batch:TerminateJob"],
        resources=[Stack.of(scope).format_arn(service="batch", resource="job", resource_name="*")]))
    role.add_to_principal_policy(iam.PolicyStatement(
        sid="TagWorkerJobs", actions=["batch:TagResource"],
        resources=[Stack.of(scope).format_arn(service="batch", resource="job", resource_name="*")],
        conditions={"StringEquals": {"batch:CreateAction": "SubmitJob"}}))
    acknowledge(
        role,
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:batch:<AWS::Region>:<AWS::AccountId>:job/*]",
        "Tagging a job at SubmitJob (limited by batch:CreateAction) and terminating the worker jobs it started: "
        "their ids are unknown until submitted.",
    )


def grant_find_workers(role: iam.IRole, *, scope: Construct) -> None:
    """Which worker jobs run on an EC2 instance: DescribeJobs (no resource-level permissions) and the ECS
    container instances of the cluster Batch creates for the compute environment."""
    role.add_to_principal_policy(iam.PolicyStatement(sid="FindWorkers", actions=["batch:DescribeJobs"],
                                                     resources=["*"]))
    role.add_to_principal_policy(iam.PolicyStatement(
        sid="FindWorkerInstances", actions=["ecs:DescribeContainerInstances"],
        resources=[Stack.of(scope).format_arn(service="ecs", resource="container-instance", resource_name="*")]))
    acknowledge(role, "AwsSolutions-IAM5[Resource::*]",
                "batch:DescribeJobs has no resource-level permissions (Service Authorization Reference).")
    acknowledge(
        role,
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:"
        "container-instance/*]",
        "The container instances of the cluster Batch creates for the compute environment (named by Batch).")


class WorkerScaler(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, environment: Mapping[str, str],
                 code: lambda_.Code, layers: list[lambda_.ILayerVersion], table: dynamodb.ITable,
                 work_queue: WorkQueue, job_queue: batch.IJobQueue, job_definition: batch.IJobDefinition,
                 memory_mib: int, log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        self.handler = PythonFunction(
            self, "Handler", handler=SCALER_HANDLER,
            description="Starts GPU worker jobs to follow the work queue; frees the slots of ended workers",
            code=code, layers=layers, environment=environment, service_name="upscaler-scaler",
            timeout=Duration.seconds(30), memory_mib=memory_mib, log_retention=log_retention,
            reserved_concurrency=None,
        )
        self.function = self.handler.function
        role = self.handler.role
        work_queue.grant_depth(role)
        grant_start_workers(role, scope=self, table=table, job_queue=job_queue, job_definition=job_definition)
        grant_find_workers(role, scope=self)

        self.dead_letter_queue = dead_letter_queue(self, "DeadLetterQueue")
        acknowledge(self.dead_letter_queue, "AwsSolutions-SQS3",
                    "This queue is itself the dead-letter queue of the scaler's EventBridge targets.")
        target = targets.LambdaFunction(self.function, dead_letter_queue=self.dead_letter_queue,
                                        retry_attempts=3, max_event_age=Duration.minutes(10))
        self.schedule = events.Rule(self, "Schedule", description="Keep GPU workers following the work queue",
                                    schedule=events.Schedule.rate(SCHEDULE), targets=[target])
        # Spot reclaims: which instances carry our workers is known only to Batch, so every warning in the
        # region is delivered and the handler ignores instances without one.
        self.spot_warning = events.Rule(
            self, "SpotInterruptionWarning", description="An EC2 spot instance will be reclaimed in two minutes",
            event_pattern=events.EventPattern(source=["aws.ec2"],
                                              detail_type=["EC2 Spot Instance Interruption Warning"]),
            targets=[target])
        self.worker_ended = events.Rule(
            self, "WorkerEnded", description="A worker job of the upscaler queue ended",
            event_pattern=events.EventPattern(
                source=["aws.batch"], detail_type=["Batch Job State Change"],
                detail={"status": ["SUCCEEDED", "FAILED"], "jobQueue": [job_queue.job_queue_arn]}),
            targets=[target])
