"""AWS Batch on GPU instances: spot compute (optionally on-demand behind it), a queue, the worker job.

Scales to zero (min vCPUs 0). Each Batch job is one worker that drains the work queue until idle
(common.scaling decides how many run); the job definition runs the image built from
gpu_batch/Dockerfile, whose ENTRYPOINT is `python -m gpu_batch.worker`, and passes no command.

What new instances boot is decided at deploy time, so that every deploy that changes it reaches them:
- the launch template is named by its version number: Batch resolves `$Default`/`$Latest` only at an
  infrastructure update of the compute environment, so user-data edits would otherwise never reach new
  instances; a new version changes the compute environment's properties and so triggers that update;
- the AMI is AWS's recommended ECS AL2023 GPU image, read from its public SSM parameter at every deploy
  (`UpdateToLatestImageVersion` would refresh it only at such an update, and is ignored with an AMI id).
Names are CloudFormation's (derived from the stack), so two stacks fit in one account and region.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, Size, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from common.settings import Settings
from infra.config import REPO_ROOT, InfraConfig
from infra.constructs.instance_guard import WORKER_UID, instance_user_data
from infra.constructs.nag import acknowledge
from infra.constructs.network import Network

WORKER_DOCKERFILE = "gpu_batch/Dockerfile"
# The image's build context is the repo root (the worker imports common/); these never belong in it and
# excluding them keeps synth's fingerprint of the directory fast.
IMAGE_EXCLUDES = [".venv", "node_modules", "cdk.out", ".git", "out", "tests", "docs", "benchmarks",
                  ".local-stack", ".pytest_cache", ".ruff_cache", "**/__pycache__", "*.egg-info"]
MISCONFIGURED_WAIT_MINUTES = 10  # e.g. worker memory larger than any allowed instance offers: never placeable
ROOT_DEVICE = "/dev/xvda"  # ECS-optimized AL2023 AMIs
# AWS's public parameter holding the recommended ECS-optimized AL2023 NVIDIA AMI of the region
# (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/retrieve-ecs-optimized_AMI.html).
GPU_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"


def worker_image() -> ecs.ContainerImage:
    return ecs.ContainerImage.from_asset(
        str(REPO_ROOT), file=WORKER_DOCKERFILE, exclude=IMAGE_EXCLUDES,
        platform=ecr_assets.Platform.LINUX_AMD64,
    )


class GpuBatch(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, settings: Settings,
                 environment: Mapping[str, str], network: Network, log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        self.launch_template = launch_template = ec2.LaunchTemplate(
            self, "LaunchTemplate",
            require_imdsv2=True,
            http_put_response_hop_limit=1,  # bridge-network containers only: Batch jobs use the host network,
            http_protocol_ipv6=False,       # so the user data rejects IMDS traffic from the worker (instance_guard)
            user_data=instance_user_data(),
            block_devices=[ec2.BlockDevice(device_name=ROOT_DEVICE, volume=ec2.BlockDeviceVolume.ebs(
                config.root_volume_gib, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3,
                delete_on_termination=True))],
        )
        self.instance_role = iam.Role(
            self, "InstanceRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="ECS container instances of the GPU compute environments",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(
                "service-role/AmazonEC2ContainerServiceforEC2Role")],
        )
        acknowledge(self.instance_role,
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AmazonEC2ContainerServiceforEC2Role]",
                    "The ECS agent's AWS-maintained policy for registering container instances; jobs get "
                    "their own role (JobRole) and cannot reach the instance's credentials: the launch "
                    "template's user data rejects IMDS traffic from the worker's uid and from container "
                    "bridges (host networking bypasses the hop limit).")
        instance_types = [ec2.InstanceType(t) for t in config.instance_types]
        self.compute_environments: list[batch.ManagedEc2EcsComputeEnvironment] = [
            self._compute_environment("Gpu", config=config, network=network, launch_template=launch_template,
                                      instance_types=instance_types, spot=config.use_spot,
                                      max_vcpus=config.max_vcpus)
        ]
        if config.on_demand_environment:
            self.compute_environments.append(self._compute_environment(
                "GpuOnDemand", config=config, network=network, launch_template=launch_template,
                instance_types=instance_types, spot=False, max_vcpus=config.on_demand_max_vcpus))

        self.job_queue = batch.JobQueue(
            self, "Queue", priority=1,
            job_state_time_limit_actions=[
                batch.JobStateTimeLimitAction(max_time=Duration.minutes(config.capacity_wait_minutes),
                                              reason=batch.JobStateTimeLimitActionsReason.INSUFFICIENT_INSTANCE_CAPACITY),
                *(batch.JobStateTimeLimitAction(max_time=Duration.minutes(MISCONFIGURED_WAIT_MINUTES), reason=reason)
                  for reason in (batch.JobStateTimeLimitActionsReason.COMPUTE_ENVIRONMENT_MAX_RESOURCE,
                                 batch.JobStateTimeLimitActionsReason.JOB_RESOURCE_REQUIREMENT)),
            ],
            compute_environments=[batch.OrderedComputeEnvironment(compute_environment=ce, order=order)
                                  for order, ce in enumerate(self.compute_environments, start=1)],
        )

        self.log_group = logs.LogGroup(self, "WorkerLogs", retention=log_retention)
        self.job_role = iam.Role(self, "JobRole", assumed_by=ecs_tasks_principal(self),
                                 description="The upscaler worker: read uploads, write outputs, update jobs")
        self.execution_role = iam.Role(self, "ExecutionRole", assumed_by=ecs_tasks_principal(self),
                                       description="ECS agent: pull the worker image, write its logs")
        self.job_definition = batch.EcsJobDefinition(
            self, "Worker",
            container=batch.EcsEc2ContainerDefinition(
                self, "Container",
                image=worker_image(),
                cpu=config.worker_vcpus,
                memory=Size.mebibytes(settings.worker_memory_mib),
                gpu=1,
                user=str(WORKER_UID),  # the uid the instance's IMDS block applies to (and the image's USER)
                environment=dict(environment),
                job_role=self.job_role,
                execution_role=self.execution_role,
                logging=ecs.LogDriver.aws_logs(stream_prefix="worker", log_group=self.log_group),
            ),
            # No Batch retries: a worker that dies loses no item (each comes back to the work queue after
            # its visibility timeout), and the scaler starts a new worker when the queue needs one.
            retry_attempts=1,
            timeout=Duration.seconds(settings.worker_timeout_seconds),
            propagate_tags=True,
        )
        acknowledge(
            self.execution_role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken has no resource-level permissions; image reads are scoped "
                   "to the asset repository.",
        )

    def _compute_environment(self, construct_id: str, *, config: InfraConfig, network: Network,
                             launch_template: ec2.LaunchTemplate, instance_types: list[ec2.InstanceType],
                             spot: bool, max_vcpus: int) -> batch.ManagedEc2EcsComputeEnvironment:
        environment = batch.ManagedEc2EcsComputeEnvironment(
            self, construct_id,
            vpc=network.vpc,
            vpc_subnets=network.worker_subnets,
            security_groups=[network.worker_security_group],
            instance_types=instance_types,
            use_optimal_instance_classes=False,
            spot=spot,
            allocation_strategy=(batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED if spot
                                 else batch.AllocationStrategy.BEST_FIT_PROGRESSIVE),
            minv_cpus=0,
            maxv_cpus=max_vcpus,
            images=[batch.EcsMachineImage(image=ec2.MachineImage.from_ssm_parameter(GPU_AMI_PARAMETER),
                                          image_type=batch.EcsMachineImageType.ECS_AL2023_NVIDIA)],
            launch_template=launch_template,
            instance_role=self.instance_role,
            update_to_latest_image_version=False,  # ignored next to an AMI id; the deploy refreshes it
        )
        resource = environment.node.default_child
        assert isinstance(resource, batch.CfnComputeEnvironment)
        resource.add_property_override("ComputeResources.LaunchTemplate.Version",
                                       launch_template.latest_version_number)
        return environment


def ecs_tasks_principal(scope: Construct) -> iam.ServicePrincipal:
    """ECS tasks of this account and region only: AWS's confused-deputy guidance for task roles
    (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-iam-roles.html)."""
    stack = Stack.of(scope)
    return iam.ServicePrincipal("ecs-tasks.amazonaws.com", conditions={
        "StringEquals": {"aws:SourceAccount": stack.account},
        "ArnLike": {"aws:SourceArn": stack.format_arn(service="ecs", resource="*")},
    })
