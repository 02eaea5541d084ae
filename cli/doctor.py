"""`upscaler doctor`: read-only checks of an AWS account before `cdk deploy`, each one a plain function.

Every check takes the boto3 clients it reads and the deployment config (infra/config.py, from cdk.json and
`-c` overrides) and returns findings: OK, WARN (deploys, but runs below what the config asks for) or FAIL
(the deploy fails, or the pipeline it deploys cannot run a single job). Nothing is created or changed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import boto3
import typer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # infra/ is imported only when the command runs: the worker image ships cli/ without it
    from infra.config import InfraConfig

# boto3 clients are untyped; this alias documents which service each parameter expects.
Client = Any


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    found: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Quota:
    service_code: str
    quota_code: str
    name: str


# Service Quotas codes (vCPU-based EC2 quotas; Lambda's account concurrency).
SPOT_G_QUOTA = Quota("ec2", "L-3819A6DF", "All G and VT Spot Instance Requests")
ON_DEMAND_G_QUOTA = Quota("ec2", "L-DB2E81BA", "Running On-Demand G and VT instances")
LAMBDA_CONCURRENCY_QUOTA = Quota("lambda", "L-B99A9384", "Concurrent executions")
# Lambda refuses a reservation that leaves fewer than this many executions unreserved.
UNRESERVED_CONCURRENCY_MINIMUM = 100

# CDK bootstrap facts of aws-cdk-lib's DefaultStackSynthesizer (tests check them against the library).
DEFAULT_TOOLKIT_STACK = "CDKToolkit"
DEFAULT_QUALIFIER = "hnb659fds"
QUALIFIER_CONTEXT_KEY = "@aws-cdk/core:bootstrapQualifier"
BOOTSTRAP_VERSION_PARAMETER = "/cdk-bootstrap/{qualifier}/version"
MIN_BOOTSTRAP_VERSION = 6  # what every synthesized template asserts
MIN_LOOKUP_BOOTSTRAP_VERSION = 8  # the lookup role, needed to look up an existing VPC (vpc_id)
_STACK_USABLE = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE",
                           "IMPORT_ROLLBACK_COMPLETE"})
_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unchecked(check: str, exc: Exception, permission: str) -> Finding:
    """A check that could not read what it needs: not a blocker, but the user must look themselves."""
    if isinstance(exc, ClientError) and _error_code(exc) in _DENIED:
        return Finding(check, Status.WARN, f"not allowed to read ({_error_code(exc)})",
                       f"allow {permission} to the caller, or check it in the console")
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return Finding(check, Status.WARN, f"could not check: {first_line[:160]}", "check it in the console")


# --- GPU quotas -------------------------------------------------------------------------------------------

def quota_value(quotas: Client, quota: Quota) -> float:
    """The applied value of a quota; AWS answers NoSuchResource for quotas never raised, then the default."""
    try:
        answer = quotas.get_service_quota(ServiceCode=quota.service_code, QuotaCode=quota.quota_code)
    except ClientError as exc:
        if _error_code(exc) != "NoSuchResourceException":
            raise
        answer = quotas.get_aws_default_service_quota(ServiceCode=quota.service_code, QuotaCode=quota.quota_code)
    return float(answer["Quota"]["Value"])


def gpu_quota_needs(config: InfraConfig) -> list[tuple[Quota, int]]:
    """The vCPUs each GPU quota must allow: the spot environment's max, and the on-demand one's."""
    if not config.use_spot:
        return [(ON_DEMAND_G_QUOTA, config.max_vcpus)]
    needs = [(SPOT_G_QUOTA, config.max_vcpus)]
    if config.on_demand_environment:
        needs.append((ON_DEMAND_G_QUOTA, config.on_demand_max_vcpus))
    return needs


def judge_gpu_quota(quota: Quota, value: float, *, needed: int, one_job: int, region: str) -> Finding:
    check = f"EC2 quota: {quota.name}"
    found = f"{value:g} vCPUs (config needs {needed})"
    fix = (f"request >= {needed} in Service Quotas > Amazon EC2 > '{quota.name}' ({quota.quota_code}) in {region}: "
           f"aws service-quotas request-service-quota-increase --service-code {quota.service_code} "
           f"--quota-code {quota.quota_code} --desired-value {needed} --region {region}")
    if value < one_job:
        # The deploy succeeds, but every job waits RUNNABLE until capacity_wait_minutes cancels it.
        return Finding(check, Status.FAIL, f"{found}: not one {one_job}-vCPU job can start", fix)
    if value < needed:
        return Finding(check, Status.WARN, f"{found}: at most {int(value // one_job)} jobs at once", fix)
    return Finding(check, Status.OK, found)


def check_gpu_quotas(quotas: Client, config: InfraConfig, *, region: str) -> list[Finding]:
    findings = []
    for quota, needed in gpu_quota_needs(config):
        try:
            value = quota_value(quotas, quota)
        except (ClientError, BotoCoreError) as exc:
            findings.append(_unchecked(f"EC2 quota: {quota.name}", exc, "servicequotas:GetServiceQuota"))
            continue
        findings.append(judge_gpu_quota(quota, value, needed=needed, one_job=config.worker_vcpus, region=region))
    return findings


def check_instance_types(ec2: Client, config: InfraConfig, *, region: str) -> Finding:
    """The configured GPU instance types that this region offers at all."""
    check = "GPU instance types offered"
    try:
        pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
            LocationType="region", Filters=[{"Name": "instance-type", "Values": list(config.instance_types)}])
        offered = {o["InstanceType"] for page in pages for o in page["InstanceTypeOfferings"]}
    except (ClientError, BotoCoreError) as exc:
        return _unchecked(check, exc, "ec2:DescribeInstanceTypeOfferings")
    missing = [t for t in config.instance_types if t not in offered]
    fix = f"choose types offered in {region}: -c upscaler:instance_types=..."
    if len(missing) == len(config.instance_types):
        return Finding(check, Status.FAIL, f"none of {', '.join(missing)} in {region}", fix)
    if missing:
        return Finding(check, Status.WARN, f"not in {region}: {', '.join(missing)} (fewer spot pools)", fix)
    return Finding(check, Status.OK, ", ".join(config.instance_types))


# --- Lambda concurrency -----------------------------------------------------------------------------------

def judge_lambda_concurrency(*, account_limit: int, unreserved: int, reserved: int | None,
                             max_concurrency: int) -> Finding:
    """Lambda's rule: a reservation must leave UNRESERVED_CONCURRENCY_MINIMUM unreserved, or the deploy fails."""
    check = "Lambda concurrency (intake)"
    found = f"account limit {account_limit}, unreserved {unreserved}"
    raise_fix = (f"request a higher '{LAMBDA_CONCURRENCY_QUOTA.name}' quota ({LAMBDA_CONCURRENCY_QUOTA.quota_code})")
    if reserved is not None:
        left = unreserved - reserved
        if left < UNRESERVED_CONCURRENCY_MINIMUM:
            return Finding(check, Status.FAIL,
                           f"{found}: reserving {reserved} leaves {left}, below Lambda's minimum of "
                           f"{UNRESERVED_CONCURRENCY_MINIMUM}",
                           f"deploy with -c upscaler:intake_reserved_concurrency=null, or {raise_fix} "
                           f"(a redeploy keeping its own reservation needs {reserved} less)")
        return Finding(check, Status.OK, f"{found}: reserving {reserved} leaves {left}")
    if unreserved < max_concurrency:
        # No reservation: the deploy works; the intake just shares a pool smaller than its own throttle.
        return Finding(check, Status.WARN,
                       f"{found}: below the intake's maximum concurrency {max_concurrency} (uploads wait longer)",
                       raise_fix)
    return Finding(check, Status.OK, f"{found}; intake takes up to {max_concurrency}, no reservation")


def check_lambda_concurrency(lambda_client: Client, config: InfraConfig) -> Finding:
    try:
        limits = lambda_client.get_account_settings()["AccountLimit"]
    except (ClientError, BotoCoreError) as exc:
        return _unchecked("Lambda concurrency (intake)", exc, "lambda:GetAccountSettings")
    return judge_lambda_concurrency(account_limit=int(limits["ConcurrentExecutions"]),
                                    unreserved=int(limits["UnreservedConcurrentExecutions"]),
                                    reserved=config.intake_reserved_concurrency,
                                    max_concurrency=config.intake_max_concurrency)


# --- Powertools layer -------------------------------------------------------------------------------------

def check_powertools_layer(ssm: Client, parameter: str, *, region: str) -> Finding:
    """The public SSM parameter the stack resolves the Powertools layer ARN from, in this region."""
    check = "Powertools layer"
    try:
        arn = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
    except ClientError as exc:
        if _error_code(exc) == "ParameterNotFound":
            versions = parameter.rpartition("/")[0]
            return Finding(check, Status.FAIL, f"{parameter} does not exist in {region}",
                           f"pin a version published there (aws ssm get-parameters-by-path --path {versions} "
                           f"--region {region}) with -c upscaler:powertools_version=X.Y.Z, or use another region")
        return _unchecked(check, exc, "ssm:GetParameter")
    except BotoCoreError as exc:
        return _unchecked(check, exc, "ssm:GetParameter")
    return Finding(check, Status.OK, str(arn))


# --- CDK bootstrap ----------------------------------------------------------------------------------------

def check_cdk_bootstrap(cfn: Client, ssm: Client, *, account: str, region: str, qualifier: str = DEFAULT_QUALIFIER,
                        toolkit_stack: str = DEFAULT_TOOLKIT_STACK, min_version: int = MIN_BOOTSTRAP_VERSION,
                        ) -> Finding:
    check = "CDK bootstrap"
    bootstrap = (f"npx cdk bootstrap aws://{account}/{region}"
                 + (f" --qualifier {qualifier}" if qualifier != DEFAULT_QUALIFIER else ""))
    try:
        stacks = cfn.describe_stacks(StackName=toolkit_stack)["Stacks"]
    except ClientError as exc:
        if _error_code(exc) == "ValidationError" and "does not exist" in str(exc):
            return Finding(check, Status.FAIL, f"no {toolkit_stack} stack in {region}", bootstrap)
        return _unchecked(check, exc, "cloudformation:DescribeStacks")
    except BotoCoreError as exc:
        return _unchecked(check, exc, "cloudformation:DescribeStacks")
    status = stacks[0]["StackStatus"]
    if status not in _STACK_USABLE:
        return Finding(check, Status.FAIL, f"{toolkit_stack} is {status}",
                       f"fix or delete the {toolkit_stack} stack in the CloudFormation console, then {bootstrap}")
    parameter = BOOTSTRAP_VERSION_PARAMETER.format(qualifier=qualifier)
    try:
        version = int(ssm.get_parameter(Name=parameter)["Parameter"]["Value"])
    except ClientError as exc:
        if _error_code(exc) == "ParameterNotFound":
            return Finding(check, Status.FAIL, f"{parameter} missing (bootstrapped with another qualifier?)",
                           bootstrap)
        return _unchecked(check, exc, "ssm:GetParameter")
    except (BotoCoreError, ValueError) as exc:
        return _unchecked(check, exc, "ssm:GetParameter")
    if version < min_version:
        return Finding(check, Status.FAIL, f"bootstrap version {version}, this app needs >= {min_version}",
                       bootstrap)
    return Finding(check, Status.OK, f"{toolkit_stack} {status}, version {version}")


# --- the command ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Clients:
    service_quotas: Client
    ec2: Client
    lambda_: Client
    ssm: Client
    cloudformation: Client


def powertools_parameter(version: str) -> str:
    """The SSM parameter the stack reads for this layer version (one fact, in infra/constructs/lambdas.py).

    Imported when the command runs: that module loads aws_cdk (several seconds, and Node.js).
    """
    from infra.constructs.lambdas import powertools_parameter_name

    return powertools_parameter_name(version)


def run_checks(clients: Clients, config: InfraConfig, *, account: str, region: str, qualifier: str,
               toolkit_stack: str, powertools: str) -> list[Finding]:
    min_version = MIN_LOOKUP_BOOTSTRAP_VERSION if config.vpc_id else MIN_BOOTSTRAP_VERSION
    return [
        check_cdk_bootstrap(clients.cloudformation, clients.ssm, account=account, region=region, qualifier=qualifier,
                            toolkit_stack=toolkit_stack, min_version=min_version),
        *check_gpu_quotas(clients.service_quotas, config, region=region),
        check_instance_types(clients.ec2, config, region=region),
        check_lambda_concurrency(clients.lambda_, config),
        check_powertools_layer(clients.ssm, powertools, region=region),
    ]


def blocking(findings: Iterable[Finding]) -> bool:
    return any(f.status is Status.FAIL for f in findings)


_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def render(findings: Sequence[Finding], *, account: str, region: str, console: Console) -> None:
    table = Table(title=f"upscaler doctor: account {account}, {region}", title_justify="left", show_lines=True)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("found", overflow="fold")  # fold, not ellipsis: parameter names and commands stay whole
    table.add_column("what to do", overflow="fold")
    for f in findings:
        table.add_row(f.check, f"[{_STYLE[f.status]}]{f.status}[/]", f.found, f.fix)
    console.print(table)
    failed = sum(f.status is Status.FAIL for f in findings)
    if failed:
        console.print(f"[bold red]{failed} problem(s) block a deploy[/]: fix the FAIL rows first.")
    else:
        console.print("[green]Nothing blocks a deploy.[/]")


def parse_context(pairs: Iterable[str], base: Mapping[str, Any]) -> dict[str, Any]:
    """cdk.json's context with `-c key=value` overrides on top, as the CDK CLI merges them."""
    context = dict(base)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: expected key=value", param_hint="--context")
        context[key] = value
    return context


def doctor(
    context: Annotated[list[str] | None, typer.Option(
        "--context", "-c", help="A context override as for `cdk deploy`, e.g. -c upscaler:max_vcpus=32.")] = None,
    region: Annotated[str | None, typer.Option(help="AWS region (default: AWS_REGION / the profile's).")] = None,
    profile: Annotated[str | None, typer.Option(help="AWS profile (default: AWS_PROFILE / default chain).")] = None,
    cdk_json: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="The CDK app's cdk.json (default: ./cdk.json, else the project's).")] = None,
    toolkit_stack_name: Annotated[str, typer.Option(help="CDK toolkit stack name.")] = DEFAULT_TOOLKIT_STACK,
) -> None:
    """Check the AWS account and region before `cdk deploy` (read-only); exit 1 if something blocks it."""
    from infra.config import ConfigError, config_from_context, load_cdk_json_context

    err = Console(stderr=True)
    path = cdk_json or (Path("cdk.json") if Path("cdk.json").is_file() else None)
    try:
        base = load_cdk_json_context(path) if path else load_cdk_json_context()
    except (OSError, ValueError, KeyError) as exc:
        err.print(f"Cannot read the context of {path or 'cdk.json'}: {exc!r}")
        raise typer.Exit(2) from exc
    try:
        config = config_from_context(ctx := parse_context(context or [], base))
    except ConfigError as exc:
        err.print(f"Invalid upscaler configuration: {exc}")
        raise typer.Exit(2) from exc
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
        account, clients = _connect(session)
    except (NoCredentialsError, NoRegionError, ClientError, BotoCoreError) as exc:
        err.print(f"Cannot reach AWS: {exc} (set AWS_PROFILE/AWS_REGION, or --profile/--region)")
        raise typer.Exit(2) from exc
    findings = run_checks(clients, config, account=account, region=session.region_name,
                          qualifier=str(ctx.get(QUALIFIER_CONTEXT_KEY, DEFAULT_QUALIFIER)),
                          toolkit_stack=toolkit_stack_name,
                          powertools=powertools_parameter(config.powertools_version))
    render(findings, account=account, region=session.region_name, console=Console())
    raise typer.Exit(1 if blocking(findings) else 0)


def _connect(session: boto3.session.Session) -> tuple[str, Clients]:
    if not session.region_name:
        raise NoRegionError()
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=30)
    make: Callable[[str], Client] = lambda service: session.client(service, config=config)  # noqa: E731
    account = str(make("sts").get_caller_identity()["Account"])
    return account, Clients(service_quotas=make("service-quotas"), ec2=make("ec2"), lambda_=make("lambda"),
                            ssm=make("ssm"), cloudformation=make("cloudformation"))
