"""GPU compute on AWS Batch: spot, scale to zero, NVIDIA AMI, the worker's job definition and retries."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from aws_cdk import Validations

from infra.config import REPO_ROOT
from infra.constructs.batch import GPU_AMI_PARAMETER, WORKER_DOCKERFILE
from infra.constructs.instance_guard import (
    AGENT_DROP_IN,
    AGENT_DROP_IN_PATH,
    IMDS_BLOCK_SCRIPT,
    SCRIPT_PATH,
    SERVICE_NAME,
    WORKER_UID,
)
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
    (image,) = resources["Ec2Configuration"]
    assert image["ImageType"] == "ECS_AL2023_NVIDIA"
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
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1,
                                       "HttpProtocolIpv6": "disabled"}  # no IPv6 IMDS to forget to block
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
    assert definition["Timeout"] == {"AttemptDurationSeconds": settings.worker_timeout_seconds}
    assert "JobDefinitionName" not in definition  # CloudFormation names it: a second stack fits beside it
    assert definition["PlatformCapabilities"] == ["EC2"]
    assert "Command" not in container  # the image's ENTRYPOINT is `python -m gpu_batch.worker`


def test_worker_jobs_are_not_retried_by_batch(default: Any) -> None:
    """A dead worker loses no item (its items come back to the work queue); the scaler starts new workers."""
    strategy = default.one("AWS::Batch::JobDefinition").get("RetryStrategy", {"Attempts": 1})
    assert strategy["Attempts"] == 1


def test_worker_environment_is_the_settings_with_the_generated_names(default: Any) -> None:
    container = default.one("AWS::Batch::JobDefinition")["ContainerProperties"]
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    settings = default.config.settings
    expected_literals = {k: v for k, v in component_environment(settings).items()
                         if k not in {"UPSCALER_REGION", "UPSCALER_INPUT_BUCKET", "UPSCALER_OUTPUT_BUCKET",
                                      "UPSCALER_JOBS_TABLE", "UPSCALER_TOPIC_ARN", "UPSCALER_WORK_QUEUE_URL",
                                      "UPSCALER_MAX_WORKERS", "UPSCALER_JOB_QUEUE", "UPSCALER_JOB_DEFINITION"}}
    assert {k: environment[k] for k in expected_literals} == expected_literals
    storage = default.stack.storage
    assert environment["UPSCALER_OUTPUT_BUCKET"] == {"Ref": default.logical_id(storage.output_bucket)}
    assert environment["UPSCALER_REGION"] == {"Ref": "AWS::Region"}
    assert environment["UPSCALER_WORK_QUEUE_URL"] == {"Ref": default.logical_id(default.stack.work.queue)}
    # 16 vCPUs of types up to 2xlarge (8 vCPUs, one GPU): two workers are sure to fit, whichever Batch picks
    assert environment["UPSCALER_MAX_WORKERS"] == str(default.config.max_workers) == "2"
    assert "UPSCALER_MODEL_DIR" not in environment  # the image's own /opt/models stays in force
    # The workers start no jobs: no queue or definition name that could be mistaken for this stack's.
    assert "UPSCALER_JOB_QUEUE" not in environment and "UPSCALER_JOB_DEFINITION" not in environment


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


def _user_data_script(synth: Any) -> str:
    """The shell part of the launch template's MIME multi-part user data, decoded."""
    user_data = synth.one("AWS::EC2::LaunchTemplate")["LaunchTemplateData"]["UserData"]["Fn::Base64"]
    parts = user_data["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else "<part>" for p in parts)
    assert text.startswith('Content-Type: multipart/mixed; boundary="')  # AWS Batch requires MIME multi-part
    assert 'Content-Type: text/x-shellscript; charset="utf-8"' in text
    (script,) = [p["Fn::Base64"] for p in parts if isinstance(p, dict)]
    return str(script)


def test_spot_reclaims_reach_the_worker_as_sigterm_with_time_to_give_its_image_back(default: Any) -> None:
    script = _user_data_script(default)
    assert "echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config" in script
    assert "echo ECS_CONTAINER_STOP_TIMEOUT=110s >> /etc/ecs/ecs.config" in script  # within the 2-minute notice


def test_user_data_installs_the_imds_block_as_a_boot_service(default: Any) -> None:
    script = _user_data_script(default)
    assert f"cat > {SCRIPT_PATH} <<'SCRIPT'\n{IMDS_BLOCK_SCRIPT}SCRIPT\n" in script
    assert f"--uid-owner {WORKER_UID} -j REJECT" in script
    assert "Before=docker.service ecs.service" in script  # in place before any job can start, every boot
    assert script.rstrip().endswith(f"systemctl enable --now {SERVICE_NAME}.service")
    result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_the_ecs_agent_does_not_start_when_the_imds_block_fails(default: Any) -> None:
    """Fail closed: ecs.service requires the block (Requires= + After=), not merely runs after it."""
    script = _user_data_script(default)
    assert f"/etc/systemd/system/ecs.service.d/10-{SERVICE_NAME}.conf" == AGENT_DROP_IN_PATH
    assert f"cat > {AGENT_DROP_IN_PATH} <<'UNIT'\n{AGENT_DROP_IN}UNIT\n" in script
    assert AGENT_DROP_IN.splitlines() == ["[Unit]", f"Requires={SERVICE_NAME}.service", f"After={SERVICE_NAME}.service"]
    # The drop-in exists before systemd reloads and before the block (and so the agent) can start.
    order = [script.index(text) for text in ("mkdir -p /etc/systemd/system/ecs.service.d", AGENT_DROP_IN_PATH,
                                             "systemctl daemon-reload", f"systemctl enable --now {SERVICE_NAME}")]
    assert order == sorted(order)


FAKE_IPTABLES = """#!/bin/bash
# Records rules in $STATE like iptables would keep them: -C checks, -I inserts, -N creates a chain.
case "$1" in
  -C) shift; grep -Fxq -- "$*" "$STATE" ;;
  -I) shift; echo "$*" >> "$STATE" ;;
  -N) if grep -Fxq -- "chain $2" "$STATE"; then exit 1; fi; echo "chain $2" >> "$STATE" ;;
  *) exit 2 ;;
esac
"""


def _run_block_script(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "iptables"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(FAKE_IPTABLES)
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "STATE": str(tmp_path / "rules")}
    result = subprocess.run(["bash", "-c", IMDS_BLOCK_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_block_script_rejects_worker_and_bridge_traffic_to_imds_once_per_rule(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.write_text("chain DOCKER-USER\n")  # Docker already started and created its chain
    _run_block_script(tmp_path)
    _run_block_script(tmp_path)  # a reboot: nothing is added twice
    assert rules.read_text().splitlines() == [
        "chain DOCKER-USER",
        f"OUTPUT -d 169.254.169.254/32 -m owner --uid-owner {WORKER_UID} -j REJECT",
        "DOCKER-USER -i docker+ -d 169.254.169.254/32 -j REJECT",
    ]


def test_the_blocked_uid_is_the_one_the_worker_runs_as(default: Any) -> None:
    dockerfile = (REPO_ROOT / WORKER_DOCKERFILE).read_text()
    users = re.findall(r"^USER\s+(\d+)", dockerfile, flags=re.MULTILINE)
    assert users and int(users[-1]) == WORKER_UID
    container = default.one("AWS::Batch::JobDefinition")["ContainerProperties"]
    # Another user (root above all) or a privileged container would escape the owner match.
    assert container["User"] == str(WORKER_UID)
    assert container.get("Privileged") in (None, False)
    assert "Capabilities" not in container.get("LinuxParameters", {})


def test_the_instance_role_acknowledgment_names_the_real_protection(default: Any) -> None:
    texts = [str(entry.data) for construct in default.stack.gpu.instance_role.node.find_all()
             for entry in construct.node.metadata if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY]
    (text,) = [t for t in texts if "AmazonEC2ContainerServiceforEC2Role" in t]
    assert "user data rejects IMDS traffic" in text
    assert "(IMDS hop limit 1)" not in text  # host networking: the hop limit protects nothing


def test_spot_warnings_reach_the_scaler_which_may_stop_worker_jobs(default: Any) -> None:
    """Finding 4: ECS spot draining stops only service tasks; the scaler terminates the Batch jobs on the
    instance at the warning, so the worker gets SIGTERM within the two-minute notice."""
    scaler = default.stack.scaler
    default.template.has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
        "Targets": [{"Arn": {"Fn::GetAtt": [default.logical_id(scaler.function), "Arn"]}}]})
    stop = default.statement(scaler.handler.role, "EndSupersededWorkers")
    assert stop["Action"] == "batch:TerminateJob"
    find = default.statement(scaler.handler.role, "FindWorkerInstances")
    assert find["Action"] == "ecs:DescribeContainerInstances"


def test_the_sweeper_runs_on_a_schedule_with_its_index_and_queues(default: Any) -> None:
    """Finding 8: nobody retried intake's unfinished work; the sweeper finds every open record by its index."""
    sweeper, storage, intake = default.stack.sweeper, default.stack.storage, default.stack.intake
    default.template.has_resource_properties("AWS::Events::Rule", {
        "ScheduleExpression": "rate(5 minutes)",
        "Targets": [{"Arn": {"Fn::GetAtt": [default.logical_id(sweeper.function), "Arn"]}}]})
    table = default.raw["Resources"][default.logical_id(storage.table)]["Properties"]
    (index,) = [i for i in table["GlobalSecondaryIndexes"] if i["IndexName"] == "sweep"]
    assert (index["IndexName"], [k["AttributeName"] for k in index["KeySchema"]]) == ("sweep", ["sweep_shard",
                                                                                               "sweep_at"])
    query = default.statement(sweeper.handler.role, "DueRecords")
    assert query["Action"] == "dynamodb:Query"
    redrive = default.statement(sweeper.handler.role, "RedriveUploads")
    assert redrive["Resource"] == {"Fn::GetAtt": [default.logical_id(intake.queue), "Arn"]}
    env = default.raw["Resources"][default.logical_id(sweeper.function)]["Properties"]["Environment"]["Variables"]
    assert env["UPSCALER_INTAKE_QUEUE_URL"] == {"Ref": default.logical_id(intake.queue)}


def test_the_batch_job_timeout_leaves_room_for_an_image_taken_late(default: Any) -> None:
    """Finding 11: the timeout was worker_max + visibility + 300 s, shorter than an image may legitimately run."""
    settings = default.config.settings
    definition = default.one("AWS::Batch::JobDefinition")
    assert definition["Timeout"]["AttemptDurationSeconds"] >= settings.worker_max_seconds + settings.max_item_seconds


def test_new_instances_boot_what_the_last_deploy_set(default: Any, variant: Any) -> None:
    """The launch template is named by version (a user-data change is a new version, which changes the compute
    environment and so makes Batch update its infrastructure), and the AMI is resolved at every deploy."""
    for synth in (default, variant):
        template_id = synth.logical_id(synth.stack.gpu.launch_template)
        for environment in _compute_environments(synth):
            resources = environment["ComputeResources"]
            assert resources["LaunchTemplate"] == {
                "LaunchTemplateId": {"Ref": template_id},
                "Version": {"Fn::GetAtt": [template_id, "LatestVersionNumber"]},
            }
            (image,) = resources["Ec2Configuration"]
            parameter = synth.raw["Parameters"][image["ImageIdOverride"]["Ref"]]
            assert parameter == {"Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
                                 "Default": GPU_AMI_PARAMETER}
            # ignored next to an AMI id; the deploy's parameter resolution refreshes it instead
            assert resources["UpdateToLatestImageVersion"] is False
            assert environment["ReplaceComputeEnvironment"] is False  # updated in place, jobs keep running


def test_job_and_execution_roles_trust_only_this_accounts_ecs_tasks(default: Any) -> None:
    for role in (default.stack.gpu.job_role, default.stack.gpu.execution_role):
        (statement,) = default.raw["Resources"][default.logical_id(role)]["Properties"]["AssumeRolePolicyDocument"][
            "Statement"]
        assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
        assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
        source_arn = statement["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Join"][1]
        assert source_arn == ["arn:", {"Ref": "AWS::Partition"}, ":ecs:", {"Ref": "AWS::Region"}, ":",
                              {"Ref": "AWS::AccountId"}, ":*"]
