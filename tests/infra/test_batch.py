"""GPU compute on AWS Batch: spot, scale to zero, NVIDIA AMI, the worker's job definition and retries."""

from __future__ import annotations

from typing import Any

from common.contract import EXIT_RETRYABLE
from infra.constructs.batch import WORKER_DOCKERFILE
from infra.stack import component_environment


def _compute_environments(synth: Any) -> list[dict[str, Any]]:
    return [synth.raw["Resources"][synth.logical_id(ce)]["Properties"] for ce in synth.stack.gpu.compute_environments]


def test_spot_gpu_environment_scales_to_zero_on_the_nvidia_ecs_ami(default: Any) -> None:
    (environment,) = _compute_environments(default)
    resources = environment["ComputeResources"]
    assert environment["Type"] == "managed"
    assert resources["Type"] == "SPOT"
    assert resources["AllocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
    assert resources["MinvCpus"] == 0
    assert resources["MaxvCpus"] == default.config.max_vcpus
    assert sorted(resources["InstanceTypes"]) == sorted(["g5.xlarge", "g5.2xlarge", "g4dn.xlarge", "g4dn.2xlarge"])
    assert resources["Ec2Configuration"] == [{"ImageType": "ECS_AL2023_NVIDIA"}]
    assert resources["Subnets"]  # private subnets of the stack's VPC
    assert resources["SecurityGroupIds"] == [{"Fn::GetAtt": [
        default.logical_id(default.stack.network.worker_security_group), "GroupId"]}]


def test_on_demand_environment_sits_behind_spot_in_the_same_queue(default: Any, variant: Any) -> None:
    spot, on_demand = _compute_environments(variant)
    assert spot["ComputeResources"]["Type"] == "SPOT"
    assert on_demand["ComputeResources"]["Type"] == "EC2"
    assert on_demand["ComputeResources"]["MinvCpus"] == 0
    assert on_demand["ComputeResources"]["MaxvCpus"] == 8
    queue = variant.one("AWS::Batch::JobQueue")
    order = {entry["Order"]: entry["ComputeEnvironment"]["Fn::GetAtt"][0] for entry in queue["ComputeEnvironmentOrder"]}
    assert order == {1: variant.logical_id(variant.stack.gpu.compute_environments[0]),
                     2: variant.logical_id(variant.stack.gpu.compute_environments[1])}
    assert len(default.one("AWS::Batch::JobQueue")["ComputeEnvironmentOrder"]) == 1


def test_jobs_that_cannot_be_placed_are_cancelled_so_the_uploader_hears_about_it(default: Any) -> None:
    limits = {a["Reason"]: a for a in default.one("AWS::Batch::JobQueue")["JobStateTimeLimitActions"]}
    assert set(limits) == {"CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
                           "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
                           "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"}
    assert all(a["Action"] == "CANCEL" and a["State"] == "RUNNABLE" for a in limits.values())
    capacity = limits["CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"]
    assert capacity["MaxTimeSeconds"] == 60 * default.config.capacity_wait_minutes
    assert limits["MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"]["MaxTimeSeconds"] == 600


def test_instances_require_imdsv2_and_encrypt_their_root_volume(default: Any) -> None:
    data = default.one("AWS::EC2::LaunchTemplate")["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    (device,) = data["BlockDeviceMappings"]
    assert device["Ebs"]["Encrypted"] is True
    assert device["Ebs"]["VolumeSize"] == default.config.root_volume_gib


def test_job_definition_reserves_one_gpu_memory_and_a_timeout(default: Any) -> None:
    definition = default.one("AWS::Batch::JobDefinition")
    settings = default.config.settings
    container = definition["ContainerProperties"]
    requirements = {r["Type"]: r["Value"] for r in container["ResourceRequirements"]}
    assert requirements == {"GPU": "1", "MEMORY": str(settings.worker_memory_mib),
                            "VCPU": str(default.config.worker_vcpus)}
    assert definition["Timeout"] == {"AttemptDurationSeconds": settings.job_timeout_seconds}
    assert definition["JobDefinitionName"] == settings.job_definition
    assert definition["PlatformCapabilities"] == ["EC2"]
    assert "Command" not in container  # the image's ENTRYPOINT is `python -m gpu_batch.worker`


def test_retry_strategy_follows_the_worker_exit_code_contract(default: Any) -> None:
    strategy = default.one("AWS::Batch::JobDefinition")["RetryStrategy"]
    assert strategy["Attempts"] == default.config.settings.job_attempts
    assert strategy["EvaluateOnExit"] == [
        {"Action": "RETRY", "OnStatusReason": "Host EC2*"},
        {"Action": "RETRY", "OnReason": "CannotPullContainerError*"},
        {"Action": "RETRY", "OnExitCode": str(EXIT_RETRYABLE)},
        {"Action": "EXIT", "OnReason": "*"},
    ]


def test_worker_environment_is_the_settings_with_the_generated_names(default: Any) -> None:
    container = default.one("AWS::Batch::JobDefinition")["ContainerProperties"]
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    settings = default.config.settings
    expected_literals = {k: v for k, v in component_environment(settings).items()
                         if k not in {"UPSCALER_REGION", "UPSCALER_INPUT_BUCKET", "UPSCALER_OUTPUT_BUCKET",
                                      "UPSCALER_JOBS_TABLE", "UPSCALER_TOPIC_ARN"}}
    assert {k: environment[k] for k in expected_literals} == expected_literals
    storage = default.stack.storage
    assert environment["UPSCALER_OUTPUT_BUCKET"] == {"Ref": default.logical_id(storage.output_bucket)}
    assert environment["UPSCALER_REGION"] == {"Ref": "AWS::Region"}
    assert "UPSCALER_MODEL_DIR" not in environment  # the image's own /opt/models stays in force


def test_worker_image_is_built_from_the_gpu_dockerfile_as_an_asset(default: Any) -> None:
    container = default.one("AWS::Batch::JobDefinition")["ContainerProperties"]
    assert "container-assets" in str(container["Image"])
    manifest = (default.template_path.parent / f"{default.stack.artifact_id}.assets.json").read_text()
    assert f'"dockerFile": "{WORKER_DOCKERFILE}"' in manifest
    assert '"platform": "linux/amd64"' in manifest


def test_worker_logs_go_to_a_log_group_with_retention(default: Any) -> None:
    log = default.one("AWS::Batch::JobDefinition")["ContainerProperties"]["LogConfiguration"]
    assert log["LogDriver"] == "awslogs"
    assert log["Options"]["awslogs-group"] == {"Ref": default.logical_id(default.stack.gpu.log_group)}
