"""`upscaler doctor`'s account checks: moto where it implements the call (CloudFormation, SSM, SNS), botocore's
Stubber where it does not (Service Quotas for EC2, Lambda's account settings, AZ offerings, endpoint services)
or refuses the setup (AWS-owned SSM parameters)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from rich.console import Console
from typer.testing import CliRunner

from cli import account_checks as doc
from cli import doctor
from cli.findings import Finding, Section, Status, exit_code, render
from cli.main import app
from cli.toolchain import Completed
from infra.config import InfraConfig

REGION = "us-east-1"
ACCOUNT = "123456789012"
POWERTOOLS = "/aws/service/powertools/python/x86_64/python3.14/3.37.0"
LAYER_ARN = "arn:aws:lambda:us-east-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python314-x86_64:30"
CONFIG = InfraConfig()  # 16 spot vCPUs, 4 per job, no on-demand environment


@pytest.fixture(autouse=True)
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


def client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)


def quotas_answering(*values: float | None) -> tuple[Any, Stubber]:
    """A Service Quotas client whose get_service_quota answers each value in turn (None: never raised)."""
    quotas = client("service-quotas")
    stub = Stubber(quotas)
    for value in values:
        if value is None:
            stub.add_client_error("get_service_quota", "NoSuchResourceException")
            value = 0.0
            stub.add_response("get_aws_default_service_quota", {"Quota": {"Value": value}})
        else:
            stub.add_response("get_service_quota", {"Quota": {"Value": value}})
    stub.activate()
    return quotas, stub


def lambda_answering(limit: int, unreserved: int) -> Any:
    lam = client("lambda")
    stub = Stubber(lam)
    stub.add_response("get_account_settings", {"AccountLimit": {
        "ConcurrentExecutions": limit, "UnreservedConcurrentExecutions": unreserved}})
    stub.activate()
    return lam


def bootstrap(version: str = "29", *, qualifier: str = doc.DEFAULT_QUALIFIER) -> None:
    """A CDKToolkit stack holding its version parameter, as `cdk bootstrap` creates it."""
    template = {"Resources": {"CdkBootstrapVersion": {"Type": "AWS::SSM::Parameter", "Properties": {
        "Type": "String", "Name": doc.BOOTSTRAP_VERSION_PARAMETER.format(qualifier=qualifier), "Value": version}}}}
    client("cloudformation").create_stack(StackName=doc.DEFAULT_TOOLKIT_STACK, TemplateBody=json.dumps(template))


def ssm_with_powertools() -> Any:
    """moto refuses to create /aws/... parameters (as AWS does), so the published one is stubbed."""
    ssm = client("ssm")
    stub = Stubber(ssm)
    stub.add_response("get_parameter", {"Parameter": {"Name": POWERTOOLS, "Value": LAYER_ARN}},
                      {"Name": POWERTOOLS})
    stub.activate()
    return ssm


# --- GPU quotas -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "status", "says"), [
    (0, Status.FAIL, "not one 4-vCPU job can start"),
    (8, Status.WARN, "at most 2 jobs at once"),
    (16, Status.OK, "16 vCPUs (config needs 16)"),
    (64, Status.OK, "64 vCPUs"),
])
def test_spot_quota_against_max_vcpus(value: float, status: doc.Status, says: str) -> None:
    quotas, stub = quotas_answering(value)
    [finding] = doc.check_gpu_quotas(quotas, CONFIG, region=REGION)
    stub.assert_no_pending_responses()
    assert finding.status is status and says in finding.found
    assert doc.SPOT_G_QUOTA.name in finding.check
    if status is not Status.OK:
        assert "--quota-code L-3819A6DF --desired-value 16" in finding.fix


def test_a_quota_never_raised_falls_back_to_the_default() -> None:
    quotas, stub = quotas_answering(None)
    [finding] = doc.check_gpu_quotas(quotas, CONFIG, region=REGION)
    stub.assert_no_pending_responses()
    assert finding.status is Status.FAIL and finding.found.startswith("0 vCPUs")


def test_on_demand_environment_checks_both_quotas_with_their_own_needs() -> None:
    config = replace(CONFIG, on_demand_max_vcpus=8)
    quotas, stub = quotas_answering(32, 4)
    spot, on_demand = doc.check_gpu_quotas(quotas, config, region=REGION)
    stub.assert_no_pending_responses()
    assert (spot.status, on_demand.status) == (Status.OK, Status.WARN)
    assert doc.ON_DEMAND_G_QUOTA.name in on_demand.check and "config needs 8" in on_demand.found


def test_without_spot_max_vcpus_is_on_demand() -> None:
    assert doc.gpu_quota_needs(replace(CONFIG, use_spot=False)) == [(doc.ON_DEMAND_G_QUOTA, 16)]


def test_a_denied_read_warns_instead_of_blocking() -> None:
    quotas = client("service-quotas")
    stub = Stubber(quotas)
    stub.add_client_error("get_service_quota", "AccessDeniedException")
    stub.activate()
    [finding] = doc.check_gpu_quotas(quotas, CONFIG, region=REGION)
    assert finding.status is Status.WARN and "servicequotas:GetServiceQuota" in finding.fix


def ec2_offering(offers: dict[str, list[str]], endpoint_zones: dict[str, list[str]] | None = None) -> Any:
    """An EC2 client answering instance type offerings per AZ (and endpoint services' AZs), as AWS would."""
    ec2 = client("ec2")
    stub = Stubber(ec2)
    stub.add_response("describe_instance_type_offerings", {"InstanceTypeOfferings": [
        {"InstanceType": t, "LocationType": "availability-zone", "Location": zone}
        for zone, types in offers.items() for t in types]})
    if endpoint_zones is not None:
        stub.add_response("describe_vpc_endpoint_services", {"ServiceDetails": [
            {"ServiceName": f"com.amazonaws.{REGION}.{service}", "AvailabilityZones": zones}
            for service, zones in endpoint_zones.items()]})
    stub.activate()
    return ec2


ZONES = ["us-east-1a", "us-east-1b"]


def test_gpu_types_are_checked_in_each_az_the_workers_use() -> None:
    ok = doc.check_instance_types(ec2_offering({z: list(CONFIG.instance_types) for z in ZONES}), CONFIG, ZONES)
    assert ok.status is Status.OK
    one_zone = doc.check_instance_types(ec2_offering({"us-east-1a": ["g5.xlarge"]}), CONFIG, ZONES)
    assert one_zone.status is Status.WARN and "us-east-1b: none" in one_zone.found
    nowhere = doc.check_instance_types(ec2_offering({}), CONFIG, ZONES)
    assert nowhere.status is Status.FAIL and "upscaler:instance_types" in nowhere.fix


def test_the_workers_zones_are_the_first_of_the_region_or_those_of_the_given_vpc() -> None:
    zones = doc.worker_zones(client("ec2"), CONFIG)  # moto: us-east-1a..f
    assert zones == sorted(zones) and len(zones) == CONFIG.max_azs and zones[0] == "us-east-1a"
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1c")
    assert doc.worker_zones(ec2, replace(CONFIG, vpc_id=vpc)) == ["us-east-1c"]


def test_interface_endpoint_services_must_exist_in_every_workers_az() -> None:
    services = ["ecr.api", "sqs"]
    ec2 = ec2_offering({}, {"ecr.api": ZONES, "sqs": ["us-east-1a"]})
    ec2.describe_instance_type_offerings(LocationType="availability-zone")  # consume the first stubbed answer
    finding = doc.check_endpoint_services(ec2, services, ZONES, region=REGION)
    assert finding.status is Status.FAIL and finding.found == "sqs not in us-east-1b"
    assert "upscaler:egress=nat" in finding.fix
    ec2 = ec2_offering({}, {"ecr.api": ZONES, "sqs": ZONES})
    ec2.describe_instance_type_offerings(LocationType="availability-zone")
    assert doc.check_endpoint_services(ec2, services, ZONES, region=REGION).status is Status.OK


def test_the_endpoint_services_doctor_checks_are_the_stacks() -> None:
    from infra.constructs.network import INTERFACE_ENDPOINTS

    services = doctor.interface_endpoint_services()
    assert len(services) == len(INTERFACE_ENDPOINTS) + 1 and {"ecr.api", "ecr.dkr", "logs", "sqs"} <= set(services)


# --- credentials ------------------------------------------------------------------------------------------

class _Raising:
    def __init__(self, exc: Exception) -> None:
        self._exc = exc

    def get_caller_identity(self) -> Any:
        raise self._exc


def test_credentials_tell_no_credentials_from_no_network_from_expired() -> None:
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    missing, account = doc.check_credentials(_Raising(NoCredentialsError()), region=REGION)
    assert missing.status is Status.FAIL and account is None and "aws configure sso" in missing.fix
    offline, _ = doc.check_credentials(_Raising(EndpointConnectionError(endpoint_url="https://sts")), region=REGION)
    assert offline.status is Status.FAIL and "cannot reach AWS STS" in offline.found and "proxy" in offline.fix
    sts = client("sts")
    stub = Stubber(sts)
    stub.add_client_error("get_caller_identity", "ExpiredToken")
    stub.activate()
    expired, _ = doc.check_credentials(sts, region=REGION)
    assert "ExpiredToken" in expired.found and "aws sso login" in expired.fix
    fine, account = doc.check_credentials(client("sts"), region=REGION)
    assert fine.status is Status.OK and account == ACCOUNT


# --- alarm destination and service-linked roles -----------------------------------------------------------

def test_alarms_that_reach_nobody_are_said_loudly() -> None:
    silent = doc.check_alarm_destination(CONFIG, client("cloudformation"), client("sns"))
    assert silent.status is Status.WARN and silent.found.startswith("NO ONE")
    assert "upscaler:alarm_email=" in silent.fix
    mailed = doc.check_alarm_destination(replace(CONFIG, alarm_email="ops@example.com"), client("cloudformation"),
                                         client("sns"))
    assert mailed.status is Status.OK and "ops@example.com" in mailed.found


def test_a_deployed_alarm_topic_with_a_subscriber_counts() -> None:
    topic = client("sns").create_topic(Name="alarms")["TopicArn"]
    template = {"Resources": {"Nothing": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {"AlarmTopicArn": {"Value": topic}}}
    client("cloudformation").create_stack(StackName=CONFIG.stack_name, TemplateBody=json.dumps(template))
    assert doc.check_alarm_destination(CONFIG, client("cloudformation"), client("sns")).status is Status.WARN
    client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint="arn:aws:sqs:us-east-1:123456789012:pager")
    found = doc.check_alarm_destination(CONFIG, client("cloudformation"), client("sns"))
    assert found.status is Status.OK and "1 confirmed" in found.found


def test_missing_service_linked_roles_are_named_with_the_command() -> None:
    iam = client("iam")
    stub = Stubber(iam)
    stub.add_response("get_role", {"Role": {"Path": "/", "RoleName": "AWSServiceRoleForBatch",
                                            "RoleId": "AROAEXAMPLEEXAMPLE1",
                                            "Arn": "arn:aws:iam::123456789012:role/AWSServiceRoleForBatch",
                                            "CreateDate": "2020-01-01T00:00:00Z"}})
    stub.add_client_error("get_role", "NoSuchEntity")
    stub.add_client_error("get_role", "NoSuchEntity")
    stub.activate()
    finding = doc.check_service_linked_roles(iam, CONFIG)
    assert finding.status is Status.WARN
    assert "AWSServiceRoleForECS" in finding.found and "AWSServiceRoleForEC2Spot" in finding.found
    assert "--aws-service-name spot.amazonaws.com" in finding.fix
    stub.assert_no_pending_responses()


# --- Lambda concurrency -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("limit", "unreserved", "reserved", "status"), [
    (10, 10, 5, Status.FAIL),  # a new account: the reservation would fail the deploy
    (1000, 104, 5, Status.FAIL),  # 99 left
    (1000, 105, 5, Status.OK),  # exactly the minimum left
    (10, 10, None, Status.OK),  # no reservation: the event source's max concurrency (5) fits
    (10, 3, None, Status.WARN),  # shares a pool smaller than its throttle: slower, not broken
])
def test_lambda_concurrency_headroom(limit: int, unreserved: int, reserved: int | None, status: doc.Status) -> None:
    config = replace(CONFIG, intake_reserved_concurrency=reserved, intake_max_concurrency=5)
    finding = doc.check_lambda_concurrency(lambda_answering(limit, unreserved), config)
    assert finding.status is status, finding
    if status is Status.FAIL:
        assert "intake_reserved_concurrency=null" in finding.fix and "minimum of 100" in finding.found


# --- Powertools layer -------------------------------------------------------------------------------------

def test_powertools_parameter_missing_in_the_region_blocks() -> None:
    finding = doc.check_powertools_layer(client("ssm"), POWERTOOLS, region=REGION)
    assert finding.status is Status.FAIL and POWERTOOLS in finding.found
    assert "--path /aws/service/powertools/python/x86_64/python3.14 " in finding.fix
    assert "upscaler:powertools_version=" in finding.fix


def test_a_failing_service_warns_with_one_line() -> None:
    ssm = client("ssm")
    stub = Stubber(ssm)
    stub.add_client_error("get_parameter", "InternalError", "<html>\n<body>oops</body>", http_status_code=500)
    stub.activate()
    finding = doc.check_powertools_layer(ssm, POWERTOOLS, region=REGION)
    assert finding.status is Status.WARN
    assert finding.found.startswith("could not check: ") and "\n" not in finding.found


def test_powertools_parameter_present() -> None:
    finding = doc.check_powertools_layer(ssm_with_powertools(), POWERTOOLS, region=REGION)
    assert finding.status is Status.OK and finding.found == LAYER_ARN


def test_powertools_parameter_is_the_one_the_stack_reads() -> None:
    """The name the stack's template resolves, for the configured version."""
    from aws_cdk import App, Stack
    from aws_cdk.assertions import Template

    from infra.constructs.lambdas import powertools_layer

    name = doctor.powertools_parameter("3.99.0")
    assert re.fullmatch(r"/aws/service/powertools/python/x86_64/python3\.\d+/3\.99\.0", name)
    stack = Stack(App(), "Probe")
    powertools_layer(stack, version="3.99.0")
    parameters = Template.from_stack(stack).to_json()["Parameters"]
    assert [p["Default"] for p in parameters.values() if "powertools" in p["Default"]] == [name]


# --- CDK bootstrap ----------------------------------------------------------------------------------------

def test_not_bootstrapped_says_the_command() -> None:
    finding = doc.check_cdk_bootstrap(client("cloudformation"), client("ssm"), account=ACCOUNT, region=REGION)
    assert finding.status is Status.FAIL
    assert finding.fix == f"npx cdk bootstrap aws://{ACCOUNT}/{REGION}"


def test_bootstrapped() -> None:
    bootstrap("29")
    finding = doc.check_cdk_bootstrap(client("cloudformation"), client("ssm"), account=ACCOUNT, region=REGION)
    assert finding.status is Status.OK and "version 29" in finding.found


@pytest.mark.parametrize(("version", "min_version", "status"), [
    ("5", doc.MIN_BOOTSTRAP_VERSION, Status.FAIL),
    ("6", doc.MIN_BOOTSTRAP_VERSION, Status.OK),
    ("7", doc.MIN_LOOKUP_BOOTSTRAP_VERSION, Status.FAIL),
])
def test_bootstrap_version(version: str, min_version: int, status: doc.Status) -> None:
    bootstrap(version)
    finding = doc.check_cdk_bootstrap(client("cloudformation"), client("ssm"), account=ACCOUNT, region=REGION,
                                      min_version=min_version)
    assert finding.status is status


def test_bootstrapped_with_another_qualifier() -> None:
    bootstrap("29", qualifier="custom123")
    finding = doc.check_cdk_bootstrap(client("cloudformation"), client("ssm"), account=ACCOUNT, region=REGION)
    assert finding.status is Status.FAIL and "another qualifier" in finding.found
    ok = doc.check_cdk_bootstrap(client("cloudformation"), client("ssm"), account=ACCOUNT, region=REGION,
                                 qualifier="custom123")
    assert ok.status is Status.OK


def test_bootstrap_facts_match_aws_cdk_lib() -> None:
    from aws_cdk import App, DefaultStackSynthesizer, Stack

    assert doc.DEFAULT_QUALIFIER == DefaultStackSynthesizer.DEFAULT_QUALIFIER
    assert doc.BOOTSTRAP_VERSION_PARAMETER.format(qualifier="${Qualifier}") == (
        DefaultStackSynthesizer.DEFAULT_BOOTSTRAP_STACK_VERSION_SSM_PARAMETER)
    app = App()
    Stack(app, "Probe")
    rule = app.synth().get_stack_by_name("Probe").template["Rules"]["CheckBootstrapVersion"]
    refused = rule["Assertions"][0]["Assert"]["Fn::Not"][0]["Fn::Contains"][0]
    assert refused == [str(v) for v in range(1, doc.MIN_BOOTSTRAP_VERSION)]


# --- this machine (offline) -----------------------------------------------------------------------------

def runner(answers: dict[str, Completed | None]) -> Any:
    """A command runner answering by the command line's first two words (None: not installed)."""
    def run(command: list[str]) -> Completed | None:
        key = " ".join(Path(command[0]).name if i == 0 else w for i, w in enumerate(command[:2]))
        return answers.get(key)
    return run


DOCKER_OK = {"docker --version": Completed(0, "Docker version 28.2.2, build e6534b4\n", ""),
             "docker info": Completed(0, "linux/x86_64\n", "")}
NO_ENGINE = {"docker --version": DOCKER_OK["docker --version"],
             "docker info": Completed(1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")}


def test_docker_must_be_installed_answer_and_build_amd64() -> None:
    from cli.toolchain import check_docker

    assert check_docker(runner(DOCKER_OK), {}).status is Status.OK
    missing = check_docker(runner({}), {})
    assert missing.status is Status.FAIL and "CDK_DOCKER" in missing.fix
    no_engine = check_docker(runner(NO_ENGINE), {})
    assert no_engine.status is Status.FAIL and "no engine answers: Cannot connect" in no_engine.found
    arm = {**DOCKER_OK, "docker info": Completed(0, "linux/aarch64\n", "")}
    assert check_docker(runner(arm), {}).status is Status.FAIL  # no amd64 emulation
    buildx = Completed(0, "default  docker\n  default  running  linux/arm64, linux/amd64", "")
    emulated = {**arm, "docker buildx": buildx}
    assert check_docker(runner(emulated), {}).status is Status.OK
    finch = check_docker(runner({"finch --version": Completed(0, "finch version v1", ""),
                                 "finch info": Completed(0, "linux/amd64", "")}), {"CDK_DOCKER": "finch"})
    assert finch.status is Status.OK and finch.check == "Docker (finch)"


@pytest.mark.parametrize(("version", "status"), [("v24.1.0", Status.OK), ("v22.3.0", Status.OK),
                                                 ("v20.20.2", Status.WARN), ("v16.0.0", Status.FAIL)])
def test_node_versions(version: str, status: Status) -> None:
    from cli.toolchain import check_node

    assert check_node(runner({"node --version": Completed(0, version + "\n", "")})).status is status
    assert check_node(runner({})).status is Status.FAIL


def test_the_cdk_cli_is_the_pinned_one(tmp_path: Path) -> None:
    from cli.toolchain import check_cdk_cli

    (tmp_path / "package.json").write_text(json.dumps({"devDependencies": {"aws-cdk": "2.1148.1"}}))
    assert check_cdk_cli(runner({}), tmp_path).status is Status.FAIL  # not installed
    cdk = tmp_path / "node_modules" / ".bin" / "cdk"
    cdk.parent.mkdir(parents=True)
    cdk.touch()
    assert check_cdk_cli(runner({"cdk --version": Completed(0, "2.1148.1 (build 1a2b3c)\n", "")}),
                         tmp_path).status is Status.OK
    assert check_cdk_cli(runner({"cdk --version": Completed(0, "2.1000.0 (build x)\n", "")}),
                         tmp_path).status is Status.WARN


def test_python_version() -> None:
    from cli.toolchain import check_python

    assert check_python((3, 11, 7)).status is Status.OK
    assert check_python((3, 10, 12)).status is Status.FAIL


# --- the whole command ------------------------------------------------------------------------------------

def clients(*, spot_quota: float, unreserved: int, ssm: Any = None, sts: Any = None) -> doctor.Clients:
    quotas, _ = quotas_answering(spot_quota)
    ec2 = ec2_offering({z: list(CONFIG.instance_types) for z in ZONES},
                       {s: ZONES for s in doctor.interface_endpoint_services()})
    return doctor.Clients(sts=sts or client("sts"), service_quotas=quotas, ec2=_Zones(ec2),
                          lambda_=lambda_answering(1000, unreserved), ssm=ssm or client("ssm"),
                          cloudformation=client("cloudformation"), sns=client("sns"), iam=_Roles())


class _Zones:
    """The stubbed EC2 client, plus moto's answer to describe_availability_zones (us-east-1a, -1b first)."""

    def __init__(self, stubbed: Any) -> None:
        self._stubbed = stubbed

    def describe_availability_zones(self, **kwargs: Any) -> Any:
        return client("ec2").describe_availability_zones(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stubbed, name)


class _Roles:
    """IAM with every service-linked role present (moto cannot create AWS-named service-linked roles)."""

    def get_role(self, *, RoleName: str) -> Any:
        return {"Role": {"RoleName": RoleName}}


@pytest.fixture
def cdk_json(tmp_path: Path) -> Path:
    """The app's defaults (the repository's cdk.json is checked by tests/infra)."""
    path = tmp_path / "cdk.json"
    path.write_text(json.dumps({"app": "true", "context": {"upscaler:max_vcpus": 16}}))
    return path


def invoke(monkeypatch: pytest.MonkeyPatch, cdk_json: Path, found: doctor.Clients | None, *args: str,
           machine: dict[str, Completed | None] | None = None) -> Any:
    answers = {**DOCKER_OK, "node --version": Completed(0, "v22.3.0\n", ""),
               "cdk --version": Completed(0, "2.1148.1 (build x)\n", "")} if machine is None else machine
    monkeypatch.setattr(doctor, "run_command", runner(answers))
    monkeypatch.setattr(doctor, "connect", lambda session: found)
    monkeypatch.setattr(doctor, "powertools_parameter", lambda version: POWERTOOLS)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner().invoke(app, ["doctor", "--cdk-json", str(cdk_json), *args])


def test_command_fails_with_a_table_of_what_to_fix(monkeypatch: pytest.MonkeyPatch, cdk_json: Path) -> None:
    result = invoke(monkeypatch, cdk_json, clients(spot_quota=0, unreserved=1000))
    assert result.exit_code == 1, result.output
    for text in ("This machine (offline)", "AWS account 123456789012, us-east-1", "CDK bootstrap",
                 "npx cdk bootstrap", "All G and VT Spot Instance Requests", "FAIL", "Powertools layer",
                 "Lambda concurrency", "GPU instance types in the workers' AZs", "block a deploy"):
        assert text in result.output, text


def test_a_ready_account_with_warnings_exits_2_and_without_them_0(monkeypatch: pytest.MonkeyPatch,
                                                                  cdk_json: Path) -> None:
    bootstrap("29")
    ssm = _SplitSsm(powertools=ssm_with_powertools(), rest=client("ssm"))
    result = invoke(monkeypatch, cdk_json, clients(spot_quota=16, unreserved=1000, ssm=ssm))
    assert result.exit_code == 2, result.output  # only the alarm destination warns
    assert "NO ONE" in result.output and "warning(s) to read" in result.output
    ssm = _SplitSsm(powertools=ssm_with_powertools(), rest=client("ssm"))
    result = invoke(monkeypatch, cdk_json, clients(spot_quota=16, unreserved=1000, ssm=ssm),
                    "-c", "upscaler:alarm_email=ops@example.com")
    assert result.exit_code == 0, result.output
    assert "Nothing blocks a deploy." in result.output


def test_json_output_holds_every_finding_and_the_exit_code(monkeypatch: pytest.MonkeyPatch, cdk_json: Path) -> None:
    result = invoke(monkeypatch, cdk_json, clients(spot_quota=0, unreserved=1000), "--json")
    document = json.loads(result.output)
    assert document["exit_code"] == result.exit_code == 1
    assert document["account"] == ACCOUNT and document["region"] == REGION
    (quota,) = [f for s in document["sections"] for f in s["findings"] if "Spot" in f["check"]]
    assert quota["status"] == "FAIL" and "--desired-value 16" in quota["fix"]


def test_without_credentials_or_docker_engine_the_offline_section_still_shows(monkeypatch: pytest.MonkeyPatch,
                                                                                cdk_json: Path) -> None:
    """What a machine like this one (no credentials, `docker --version` answers, no engine) gets."""
    from botocore.exceptions import NoCredentialsError

    found = clients(spot_quota=16, unreserved=1000, sts=_Raising(NoCredentialsError()))
    result = invoke(monkeypatch, cdk_json, found, machine={**NO_ENGINE, "node --version": Completed(0, "v22.1.0", "")})
    assert result.exit_code == 1, result.output
    assert "This machine (offline)" in result.output and "no engine answers" in result.output
    assert "no credentials found" in result.output
    assert "CDK bootstrap" not in result.output  # nothing else is asked without credentials


def test_context_overrides_reach_the_checks(monkeypatch: pytest.MonkeyPatch, cdk_json: Path) -> None:
    bootstrap("29")
    result = invoke(monkeypatch, cdk_json, clients(spot_quota=16, unreserved=1000), "-c", "upscaler:max_vcpus=32")
    assert "config needs 32" in result.output


@pytest.mark.parametrize(("pair", "says"), [
    ("upscaler:egress=internet", "upscaler:egress='internet': must be 'endpoints' or 'nat'"),
    ("upscaler:max_vcpus=lots", "upscaler:max_vcpus='lots': expected an integer"),
    ("upscaler:max_attempts=x", "upscaler:max_attempts='x': expected an integer"),
    ("upscaler:max_vcpus", "expected key=value"),
])
def test_a_bad_context_value_names_its_key_and_what_it_expects(monkeypatch: pytest.MonkeyPatch, cdk_json: Path,
                                                               pair: str, says: str) -> None:
    result = invoke(monkeypatch, cdk_json, clients(spot_quota=16, unreserved=1000), "-c", pair)
    assert result.exit_code == 1
    assert says in result.output.replace("\n", "") or says in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and "AWS account" not in result.output


def test_unreadable_cdk_json_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, cdk_json: Path) -> None:
    cdk_json.write_text('{"context": ')
    result = invoke(monkeypatch, cdk_json, clients(spot_quota=16, unreserved=1000))
    assert result.exit_code == 1 and "cannot read the context of" in result.output
    assert "Traceback" not in result.output


def test_exit_codes_and_render() -> None:
    ok, warn, fail = (Finding("a", Status.OK, "fine"), Finding("b", Status.WARN, "hmm", "look"),
                      Finding("c", Status.FAIL, "broken", "do x"))
    assert exit_code([Section("s", [ok])]) == 0
    assert exit_code([Section("s", [ok, warn])]) == 2
    assert exit_code([Section("s", [ok]), Section("t", [warn, fail])]) == 1
    console = Console(record=True, width=200)
    render([Section("s", [ok, fail])], console=console)
    text = console.export_text()
    assert "1 problem(s) block a deploy" in text and "do x" in text


class _SplitSsm:
    """Routes get_parameter for the AWS-owned Powertools name to the stub, everything else to moto."""

    def __init__(self, *, powertools: Any, rest: Any) -> None:
        self._powertools, self._rest = powertools, rest

    def get_parameter(self, *, Name: str) -> Any:  # boto3 spells it Name
        return (self._powertools if Name == POWERTOOLS else self._rest).get_parameter(Name=Name)


def test_no_credentials_at_all_is_said_before_the_region(monkeypatch: pytest.MonkeyPatch, cdk_json: Path,
                                                         tmp_path: Path) -> None:
    """A fresh machine: no keys, no profile files, no region. The account section asks for credentials."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                 "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = invoke(monkeypatch, cdk_json, None, machine=NO_ENGINE)
    assert result.exit_code == 1, result.output
    assert "no credentials found" in result.output and "no region" not in result.output
    assert "no engine answers" in result.output
