"""`upscaler doctor`: is this machine and this AWS account ready for `cdk deploy`? Read-only.

First the offline checks (cli/toolchain.py: Docker able to build linux/amd64, Node.js, the CDK CLI,
Python), which need no credentials; then the deployment config (cdk.json and `-c` overrides: a bad value
names its key and what it expects); then the account checks (cli/account_checks.py). Exit status: 0 ready,
1 something blocks a deploy, 2 warnings only. `--json` prints the same findings as one JSON document.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import boto3
import typer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, NoCredentialsError
from rich.console import Console

from cli.account_checks import (
    DEFAULT_QUALIFIER,
    DEFAULT_TOOLKIT_STACK,
    MIN_BOOTSTRAP_VERSION,
    MIN_LOOKUP_BOOTSTRAP_VERSION,
    QUALIFIER_CONTEXT_KEY,
    Client,
    check_alarm_destination,
    check_cdk_bootstrap,
    check_credentials,
    check_endpoint_services,
    check_gpu_quotas,
    check_instance_types,
    check_lambda_concurrency,
    check_powertools_layer,
    check_service_linked_roles,
    worker_zones,
)
from cli.findings import Finding, Section, Status, as_json, exit_code, render
from cli.toolchain import Runner, offline_checks, run_command

if TYPE_CHECKING:  # infra/ is imported only when the command runs: the worker image ships cli/ without it
    from infra.config import InfraConfig


@dataclass(frozen=True, slots=True)
class Clients:
    sts: Client
    service_quotas: Client
    ec2: Client
    lambda_: Client
    ssm: Client
    cloudformation: Client
    sns: Client
    iam: Client


def connect(session: boto3.session.Session) -> Clients:
    """Clients that fail fast when the network is down (the credentials check says so)."""
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=20)
    make: Callable[[str], Client] = lambda service: session.client(service, config=config)  # noqa: E731
    return Clients(sts=make("sts"), service_quotas=make("service-quotas"), ec2=make("ec2"), lambda_=make("lambda"),
                   ssm=make("ssm"), cloudformation=make("cloudformation"), sns=make("sns"), iam=make("iam"))


def powertools_parameter(version: str) -> str:
    """The SSM parameter the stack reads for this layer version (one fact, in infra/constructs/lambdas.py).

    Imported when the command runs: that module loads aws_cdk (several seconds, and Node.js).
    """
    from infra.constructs.lambdas import powertools_parameter_name

    return powertools_parameter_name(version)


def interface_endpoint_services() -> list[str]:
    """The interface endpoints the stack creates with egress=endpoints (one fact, in infra/constructs/network.py)."""
    from aws_cdk import aws_ec2 as ec2

    from infra.constructs.network import INTERFACE_ENDPOINTS

    return [s.short_name for s in (*INTERFACE_ENDPOINTS.values(), ec2.InterfaceVpcEndpointAwsService.SQS)]


def account_checks(clients: Clients, config: InfraConfig, *, region: str, qualifier: str,
                   toolkit_stack: str) -> tuple[list[Finding], str | None]:
    """Credentials first: without them, nothing else can be read."""
    credentials, account = check_credentials(clients.sts, region=region)
    if account is None:
        return [credentials], None
    min_version = MIN_LOOKUP_BOOTSTRAP_VERSION if config.vpc_id else MIN_BOOTSTRAP_VERSION
    findings = [
        credentials,
        check_cdk_bootstrap(clients.cloudformation, clients.ssm, account=account, region=region, qualifier=qualifier,
                            toolkit_stack=toolkit_stack, min_version=min_version),
        *check_gpu_quotas(clients.service_quotas, config, region=region),
    ]
    zones = worker_zones(clients.ec2, config)
    findings.append(check_instance_types(clients.ec2, config, zones))
    if config.egress == "endpoints" and not config.vpc_id:
        findings.append(check_endpoint_services(clients.ec2, interface_endpoint_services(), zones, region=region))
    findings += [
        check_lambda_concurrency(clients.lambda_, config),
        check_powertools_layer(clients.ssm, powertools_parameter(config.powertools_version), region=region),
        check_alarm_destination(config, clients.cloudformation, clients.sns),
        check_service_linked_roles(clients.iam, config),
    ]
    return findings, account


def parse_context(pairs: Iterable[str], base: Mapping[str, Any]) -> dict[str, Any]:
    """cdk.json's context with `-c key=value` overrides on top, as the CDK CLI merges them."""
    context = dict(base)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"-c {pair!r}: expected key=value, e.g. -c upscaler:max_vcpus=32")
        context[key] = value
    return context


def read_config(cdk_json: Path | None, pairs: Iterable[str]) -> tuple[Finding, InfraConfig | None, dict[str, Any]]:
    from infra.config import ConfigError, config_from_context, load_cdk_json_context

    path = cdk_json or (Path("cdk.json") if Path("cdk.json").is_file() else None)
    check = "Deployment config"
    try:
        context = parse_context(pairs, load_cdk_json_context(path) if path else load_cdk_json_context())
        config = config_from_context(context)
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        return Finding(check, Status.FAIL, f"cannot read the context of {path or 'cdk.json'}: {exc!r}",
                       "fix cdk.json (valid JSON with a \"context\" object)"), None, {}
    except (ConfigError, ValueError) as exc:
        return Finding(check, Status.FAIL, f"Invalid upscaler configuration: {exc}",
                       "fix that key in cdk.json or its -c override (docs/deploy.md lists them)"), None, {}
    capacity = f"{config.max_vcpus} {'spot' if config.use_spot else 'on-demand'} vCPUs"
    found = f"stack {config.stack_name}: {capacity} of {', '.join(config.instance_types)}"
    return Finding(check, Status.OK, found), config, context


def doctor(
    context: Annotated[list[str] | None, typer.Option(
        "--context", "-c", help="A context override as for `cdk deploy`, e.g. -c upscaler:max_vcpus=32.")] = None,
    region: Annotated[str | None, typer.Option(help="AWS region (default: AWS_REGION / the profile's).")] = None,
    profile: Annotated[str | None, typer.Option(help="AWS profile (default: AWS_PROFILE / default chain).")] = None,
    cdk_json: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="The CDK app's cdk.json (default: ./cdk.json, else the project's).")] = None,
    toolkit_stack_name: Annotated[str, typer.Option(help="CDK toolkit stack name.")] = DEFAULT_TOOLKIT_STACK,
    json_output: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Check this machine, the deployment config and the AWS account before `cdk deploy` (read-only).

    Exit status: 0 ready, 1 something blocks a deploy, 2 warnings only."""
    sections, account, region_name = diagnose(context or [], region=region, profile=profile, cdk_json=cdk_json,
                                              toolkit_stack=toolkit_stack_name, run=run_command)
    if json_output:
        typer.echo(json.dumps(as_json(sections, account=account, region=region_name), indent=2))
    else:
        render(sections, console=Console())
    raise typer.Exit(exit_code(sections))


def diagnose(pairs: Iterable[str], *, region: str | None, profile: str | None, cdk_json: Path | None,
             toolkit_stack: str, run: Runner) -> tuple[list[Section], str | None, str | None]:
    from infra.config import REPO_ROOT

    offline = Section("This machine (offline)", offline_checks(REPO_ROOT, os.environ, run))
    config_finding, config, ctx = read_config(cdk_json, pairs)
    sections = [offline, Section("Deployment config", [config_finding])]
    if config is None:
        return sections, None, region
    try:
        # AWS_REGION as the AWS CLI and the CDK read it (boto3 itself reads only AWS_DEFAULT_REGION)
        session = boto3.session.Session(profile_name=profile, region_name=region or os.environ.get("AWS_REGION"))
    except BotoCoreError as exc:  # ProfileNotFound and friends
        fix = "check --profile / AWS_PROFILE (aws configure list-profiles)"
        sections.append(Section("AWS account", [Finding("AWS credentials", Status.FAIL, str(exc), fix)]))
        return sections, None, region
    if session.get_credentials() is None:  # said before the region: it is the first thing to set up
        missing, _ = check_credentials(_NoCredentials(), region=session.region_name or "?")
        sections.append(Section("AWS account", [missing]))
        return sections, None, session.region_name
    if not session.region_name:
        sections.append(Section("AWS account", [Finding("AWS region", Status.FAIL, "no region configured",
                                                        "--region eu-west-1, or export AWS_REGION")]))
        return sections, None, None
    findings, account = account_checks(connect(session), config, region=session.region_name,
                                       qualifier=str(ctx.get(QUALIFIER_CONTEXT_KEY, DEFAULT_QUALIFIER)),
                                       toolkit_stack=toolkit_stack)
    title = f"AWS account {account}, {session.region_name}" if account else f"AWS account ({session.region_name})"
    sections.append(Section(title, findings))
    return sections, account, session.region_name


class _NoCredentials:
    """What STS would answer a caller without credentials, without asking it."""

    def get_caller_identity(self) -> Any:
        raise NoCredentialsError()
