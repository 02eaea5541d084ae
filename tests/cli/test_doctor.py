"""`upscaler doctor`: moto where it implements the call (CloudFormation, SSM, EC2), botocore's Stubber where it
does not (Service Quotas for EC2, Lambda's account settings) or refuses the setup (AWS-owned SSM parameters)."""

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

from cli import doctor as doc
from cli.main import app
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
    (0, doc.Status.FAIL, "not one 4-vCPU job can start"),
    (8, doc.Status.WARN, "at most 2 jobs at once"),
    (16, doc.Status.OK, "16 vCPUs (config needs 16)"),
    (64, doc.Status.OK, "64 vCPUs"),
])
def test_spot_quota_against_max_vcpus(value: float, status: doc.Status, says: str) -> None:
    quotas, stub = quotas_answering(value)
    [finding] = doc.check_gpu_quotas(quotas, CONFIG, region=REGION)
    stub.assert_no_pending_responses()
    assert finding.status is status and says in finding.found
    assert doc.SPOT_G_QUOTA.name in finding.check
    if status is not doc.Status.OK:
        assert "--quota-code L-3819A6DF --desired-value 16" in finding.fix


def test_a_quota_never_raised_falls_back_to_the_default() -> None:
    quotas, stub = quotas_answering(None)
    [finding] = doc.check_gpu_quotas(quotas, CONFIG, region=REGION)
    stub.assert_no_pending_responses()
    assert finding.status is doc.Status.FAIL and finding.found.startswith("0 vCPUs")


def test_on_demand_environment_checks_both_quotas_with_their_own_needs() -> None:
    config = replace(CONFIG, on_demand_max_vcpus=8)
    quotas, stub = quotas_answering(32, 4)
    spot, on_demand = doc.check_gpu_quotas(quotas, config, region=REGION)
    stub.assert_no_pending_responses()
    assert (spot.status, on_demand.status) == (doc.Status.OK, doc.Status.WARN)
    assert doc.ON_DEMAND_G_QUOTA.name in on_demand.check and "config needs 8" in on_demand.found


def test_without_spot_max_vcpus_is_on_demand() -> None:
    assert doc.gpu_quota_needs(replace(CONFIG, use_spot=False)) == [(doc.ON_DEMAND_G_QUOTA, 16)]


def test_a_denied_read_warns_instead_of_blocking() -> None:
    quotas = client("service-quotas")
    stub = Stubber(quotas)
    stub.add_client_error("get_service_quota", "AccessDeniedException")
    stub.activate()
    [finding] = doc.check_gpu_quotas(quotas, CONFIG, region=REGION)
    assert finding.status is doc.Status.WARN and "servicequotas:GetServiceQuota" in finding.fix


def test_instance_types_offered_in_the_region() -> None:
    assert doc.check_instance_types(client("ec2"), CONFIG, region=REGION).status is doc.Status.OK
    odd = replace(CONFIG, instance_types=("g5.xlarge", "g5.96xlarge"))
    finding = doc.check_instance_types(client("ec2"), odd, region=REGION)
    assert finding.status is doc.Status.WARN and "g5.96xlarge" in finding.found
    none = replace(CONFIG, instance_types=("g5.96xlarge",))
    assert doc.check_instance_types(client("ec2"), none, region=REGION).status is doc.Status.FAIL


# --- Lambda concurrency -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("limit", "unreserved", "reserved", "status"), [
    (10, 10, 5, doc.Status.FAIL),  # a new account: the reservation would fail the deploy
    (1000, 104, 5, doc.Status.FAIL),  # 99 left
    (1000, 105, 5, doc.Status.OK),  # exactly the minimum left
    (10, 10, None, doc.Status.OK),  # no reservation: the event source's max concurrency (5) fits
    (10, 3, None, doc.Status.WARN),  # shares a pool smaller than its throttle: slower, not broken
])
def test_lambda_concurrency_headroom(limit: int, unreserved: int, reserved: int | None, status: doc.Status) -> None:
    config = replace(CONFIG, intake_reserved_concurrency=reserved, intake_max_concurrency=5)
    finding = doc.check_lambda_concurrency(lambda_answering(limit, unreserved), config)
    assert finding.status is status, finding
    if status is doc.Status.FAIL:
        assert "intake_reserved_concurrency=null" in finding.fix and "minimum of 100" in finding.found


# --- Powertools layer -------------------------------------------------------------------------------------

def test_powertools_parameter_missing_in_the_region_blocks() -> None:
    finding = doc.check_powertools_layer(client("ssm"), POWERTOOLS, region=REGION)
    assert finding.status is doc.Status.FAIL and POWERTOOLS in finding.found
    assert "--path /aws/service/powertools/python/x86_64/python3.14 " in finding.fix
    assert "upscaler:powertools_version=" in finding.fix


def test_a_failing_service_warns_with_one_line() -> None:
    ssm = client("ssm")
    stub = Stubber(ssm)
    stub.add_client_error("get_parameter", "InternalError", "<html>\n<body>oops</body>", http_status_code=500)
    stub.activate()
    finding = doc.check_powertools_layer(ssm, POWERTOOLS, region=REGION)
    assert finding.status is doc.Status.WARN
    assert finding.found.startswith("could not check: ") and "\n" not in finding.found


def test_powertools_parameter_present() -> None:
    finding = doc.check_powertools_layer(ssm_with_powertools(), POWERTOOLS, region=REGION)
    assert finding.status is doc.Status.OK and finding.found == LAYER_ARN


def test_powertools_parameter_is_the_one_the_stack_reads() -> None:
    """The name the stack's template resolves, for the configured version."""
    from aws_cdk import App, Stack
    from aws_cdk.assertions import Template

    from infra.constructs.lambdas import powertools_layer

    name = doc.powertools_parameter("3.99.0")
    assert re.fullmatch(r"/aws/service/powertools/python/x86_64/python3\.\d+/3\.99\.0", name)
    stack = Stack(App(), "Probe")
    powertools_layer(stack, version="3.99.0")
    parameters = Template.from_stack(stack).to_json()["Parameters"]
    assert [p["Default"] for p in parameters.values() if "powertools" in p["Default"]] == [name]


# --- CDK bootstrap ----------------------------------------------------------------------------------------

def test_not_bootstrapped_says_the_command() -> None:
    finding = doc.check_cdk_bootstrap(client("cloudformation"), client("ssm"), account=ACCOUNT, region=REGION)
    assert finding.status is doc.Status.FAIL
    assert finding.fix == f"npx cdk bootstrap aws://{ACCOUNT}/{REGION}"


def test_bootstrapped() -> None:
    bootstrap("29")
    finding = doc.check_cdk_bootstrap(client("cloudformation"), client("ssm"), account=ACCOUNT, region=REGION)
    assert finding.status is doc.Status.OK and "version 29" in finding.found


@pytest.mark.parametrize(("version", "min_version", "status"), [
    ("5", doc.MIN_BOOTSTRAP_VERSION, doc.Status.FAIL),
    ("6", doc.MIN_BOOTSTRAP_VERSION, doc.Status.OK),
    ("7", doc.MIN_LOOKUP_BOOTSTRAP_VERSION, doc.Status.FAIL),
])
def test_bootstrap_version(version: str, min_version: int, status: doc.Status) -> None:
    bootstrap(version)
    finding = doc.check_cdk_bootstrap(client("cloudformation"), client("ssm"), account=ACCOUNT, region=REGION,
                                      min_version=min_version)
    assert finding.status is status


def test_bootstrapped_with_another_qualifier() -> None:
    bootstrap("29", qualifier="custom123")
    finding = doc.check_cdk_bootstrap(client("cloudformation"), client("ssm"), account=ACCOUNT, region=REGION)
    assert finding.status is doc.Status.FAIL and "another qualifier" in finding.found
    ok = doc.check_cdk_bootstrap(client("cloudformation"), client("ssm"), account=ACCOUNT, region=REGION,
                                 qualifier="custom123")
    assert ok.status is doc.Status.OK


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


# --- the whole command ------------------------------------------------------------------------------------

def clients(*, spot_quota: float, unreserved: int) -> doc.Clients:
    quotas, _ = quotas_answering(spot_quota)
    return doc.Clients(service_quotas=quotas, ec2=client("ec2"), lambda_=lambda_answering(1000, unreserved),
                       ssm=client("ssm"), cloudformation=client("cloudformation"))


@pytest.fixture
def cdk_json(tmp_path: Path) -> Path:
    """The app's defaults (the repository's cdk.json is checked by tests/infra)."""
    path = tmp_path / "cdk.json"
    path.write_text(json.dumps({"app": "true", "context": {"upscaler:max_vcpus": 16}}))
    return path


def invoke(monkeypatch: pytest.MonkeyPatch, cdk_json: Path, found: doc.Clients, *args: str) -> Any:
    monkeypatch.setattr(doc, "_connect", lambda session: (ACCOUNT, found))
    monkeypatch.setattr(doc, "powertools_parameter", lambda version: POWERTOOLS)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner().invoke(app, ["doctor", "--cdk-json", str(cdk_json), *args])


def test_command_fails_with_a_table_of_what_to_fix(monkeypatch: pytest.MonkeyPatch, cdk_json: Path) -> None:
    result = invoke(monkeypatch, cdk_json, clients(spot_quota=0, unreserved=1000))
    assert result.exit_code == 1, result.output
    for text in ("CDK bootstrap", "npx cdk bootstrap", "All G and VT Spot Instance Requests", "FAIL",
                 "Powertools layer", "Lambda concurrency", "block a deploy"):
        assert text in result.output


def test_command_passes_on_a_ready_account(monkeypatch: pytest.MonkeyPatch, cdk_json: Path) -> None:
    bootstrap("29")
    found = replace(clients(spot_quota=16, unreserved=1000), ssm=ssm_with_powertools())
    # The stubbed SSM client answers the Powertools read only; the bootstrap version comes from moto.
    found = replace(found, ssm=_SplitSsm(powertools=found.ssm, rest=client("ssm")))
    result = invoke(monkeypatch, cdk_json, found)
    assert result.exit_code == 0, result.output
    assert "Nothing blocks a deploy" in result.output


def test_context_overrides_reach_the_checks(monkeypatch: pytest.MonkeyPatch, cdk_json: Path) -> None:
    bootstrap("29")
    result = invoke(monkeypatch, cdk_json, clients(spot_quota=16, unreserved=1000), "-c", "upscaler:max_vcpus=32")
    assert "config needs 32" in result.output


def test_invalid_context_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, cdk_json: Path) -> None:
    result = invoke(monkeypatch, cdk_json, clients(spot_quota=16, unreserved=1000), "-c", "upscaler:egress=internet")
    assert result.exit_code == 2
    assert "Invalid upscaler configuration" in result.output and "Traceback" not in result.output


def test_unreadable_cdk_json_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, cdk_json: Path) -> None:
    cdk_json.write_text('{"context": ')
    result = invoke(monkeypatch, cdk_json, clients(spot_quota=16, unreserved=1000))
    assert result.exit_code == 2 and "Cannot read the context of" in result.output
    assert "Traceback" not in result.output


def test_render_marks_each_status() -> None:
    console = Console(record=True, width=200)
    findings = [doc.Finding("a", doc.Status.OK, "fine"), doc.Finding("b", doc.Status.FAIL, "broken", "do x")]
    doc.render(findings, account=ACCOUNT, region=REGION, console=console)
    text = console.export_text()
    assert "1 problem(s) block a deploy" in text and "do x" in text
    assert doc.blocking(findings) and not doc.blocking(findings[:1])


class _SplitSsm:
    """Routes get_parameter for the AWS-owned Powertools name to the stub, everything else to moto."""

    def __init__(self, *, powertools: Any, rest: Any) -> None:
        self._powertools, self._rest = powertools, rest

    def get_parameter(self, *, Name: str) -> Any:  # boto3 spells it Name
        return (self._powertools if Name == POWERTOOLS else self._rest).get_parameter(Name=Name)
