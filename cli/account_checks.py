"""`upscaler doctor`'s account checks: read-only calls that tell whether this account and region can take the
stack the config describes, each a plain function of the boto3 clients it reads and the config.

OK, WARN (deploys, but runs below what the config asks for, or something a person must see) or FAIL (the
deploy fails, or the pipeline it deploys cannot run a single job). Nothing is created or changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
)

from cli.findings import Finding, Status

if TYPE_CHECKING:  # infra/ is imported only when the command runs: the worker image ships cli/ without it
    from infra.config import InfraConfig

# boto3 clients are untyped; this alias documents which service each parameter expects.
Client = Any


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


# --- credentials ------------------------------------------------------------------------------------------

_EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
_OFFLINE = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ProxyConnectionError)


def check_credentials(sts: Client, *, region: str) -> tuple[Finding, str | None]:
    """Who the caller is; the hint tells "no credentials" from "no network" from "expired"."""
    check = "AWS credentials"
    try:
        identity = sts.get_caller_identity()
    except NoCredentialsError:
        return Finding(check, Status.FAIL, "no credentials found (environment, profile, SSO, instance role)",
                       "`aws configure sso` or `aws configure`, then export AWS_PROFILE=<profile> "
                       "(or pass --profile)"), None
    except _OFFLINE as exc:
        return Finding(check, Status.FAIL, f"cannot reach AWS STS in {region}: {type(exc).__name__}",
                       "check the network, a proxy (HTTPS_PROXY) or a firewall; the account checks need "
                       "https://sts.<region>.amazonaws.com"), None
    except ClientError as exc:
        code = _error_code(exc)
        fix = ("refresh them (`aws sso login`, or new temporary credentials)" if code in _EXPIRED
               else "check the access key / profile: AWS rejected it")
        return Finding(check, Status.FAIL, f"credentials rejected ({code})", fix), None
    except BotoCoreError as exc:
        return Finding(check, Status.FAIL, f"could not ask AWS who you are: {exc}", "check the AWS CLI setup"), None
    account = str(identity["Account"])
    return Finding(check, Status.OK, f"{identity.get('Arn', '?')} (account {account})"), account


# --- where the workers run --------------------------------------------------------------------------------

def worker_zones(ec2: Client, config: InfraConfig) -> list[str]:
    """The AZs the workers will use: the given VPC's private subnets', else the first `max_azs` of the region
    (an environment-agnostic stack's VPC takes Fn::GetAZs in order)."""
    if config.vpc_id:
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [config.vpc_id]}])["Subnets"]
        return sorted({s["AvailabilityZone"] for s in subnets if not s.get("MapPublicIpOnLaunch")})
    zones = ec2.describe_availability_zones(Filters=[{"Name": "zone-type", "Values": ["availability-zone"]},
                                                     {"Name": "state", "Values": ["available"]}])
    return sorted(z["ZoneName"] for z in zones["AvailabilityZones"])[:config.max_azs]


def check_instance_types(ec2: Client, config: InfraConfig, zones: Sequence[str]) -> Finding:
    """The configured GPU types offered in each AZ the workers use: where none is, no worker starts there."""
    check = "GPU instance types in the workers' AZs"
    try:
        pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
            LocationType="availability-zone",
            Filters=[{"Name": "instance-type", "Values": list(config.instance_types)},
                     {"Name": "location", "Values": list(zones)}])
        offered: dict[str, set[str]] = {zone: set() for zone in zones}
        for page in pages:
            for offer in page["InstanceTypeOfferings"]:
                offered.setdefault(offer["Location"], set()).add(offer["InstanceType"])
    except (ClientError, BotoCoreError) as exc:
        return _unchecked(check, exc, "ec2:DescribeInstanceTypeOfferings")
    fix = "-c upscaler:instance_types=... with types offered there" + (
        "" if config.vpc_id else ", or another region / -c upscaler:max_azs")
    empty = [zone for zone in zones if not offered.get(zone)]
    summary = "; ".join(f"{zone}: {', '.join(sorted(offered.get(zone, ()))) or 'none'}" for zone in zones)
    if not zones or len(empty) == len(zones):
        return Finding(check, Status.FAIL, f"none of {', '.join(config.instance_types)} in {summary or 'any AZ'}", fix)
    missing = sorted({t for t in config.instance_types for zone in zones if t not in offered.get(zone, ())})
    if empty or missing:
        return Finding(check, Status.WARN, f"{summary} (fewer spot pools; jobs place only where a type is)", fix)
    return Finding(check, Status.OK, summary)


def check_endpoint_services(ec2: Client, services: Sequence[str], zones: Sequence[str], *, region: str) -> Finding:
    """Every interface endpoint the stack creates exists in each workers' AZ: else CloudFormation fails there."""
    check = "VPC endpoint services in the workers' AZs"
    names = [f"com.amazonaws.{region}.{service}" for service in services]
    try:
        found = ec2.describe_vpc_endpoint_services(ServiceNames=names)["ServiceDetails"]
    except ClientError as exc:
        if _error_code(exc) == "InvalidServiceName":
            return Finding(check, Status.FAIL, f"not all of {', '.join(services)} exist in {region}: {exc}",
                           "-c upscaler:egress=nat, or another region")
        return _unchecked(check, exc, "ec2:DescribeVpcEndpointServices")
    except BotoCoreError as exc:
        return _unchecked(check, exc, "ec2:DescribeVpcEndpointServices")
    zones_of = {d["ServiceName"]: set(d.get("AvailabilityZones", [])) for d in found}
    gaps = [f"{service} not in {', '.join(sorted(set(zones) - zones_of.get(name, set())))}"
            for name, service in zip(names, services, strict=True) if set(zones) - zones_of.get(name, set())]
    if gaps:
        return Finding(check, Status.FAIL, "; ".join(gaps), "-c upscaler:max_azs=... to leave that AZ out, or "
                                                            "-c upscaler:egress=nat")
    return Finding(check, Status.OK, f"{len(services)} services in {', '.join(zones)}")


# --- alarms and service-linked roles ----------------------------------------------------------------------

def check_alarm_destination(config: InfraConfig, cfn: Client, sns: Client) -> Finding:
    """Alarms publish to the stack's alarm topic; without a subscriber nobody hears them."""
    check = "Alarm destination"
    if config.alarm_email:
        return Finding(check, Status.OK, f"e-mail to {config.alarm_email} (confirm the subscription mail)")
    silent = Finding(check, Status.WARN, "NO ONE: alarm_email is unset, so alarms (dead letters, no GPU, failed "
                                         "workers, an INVALID compute environment) reach nobody",
                     "-c upscaler:alarm_email=ops@example.com, or subscribe to the AlarmTopicArn output yourself")
    try:
        stacks = cfn.describe_stacks(StackName=config.stack_name)["Stacks"]
    except (ClientError, BotoCoreError):
        return silent  # not deployed yet (or not readable): only the config can say
    topic = next((o["OutputValue"] for o in stacks[0].get("Outputs", []) if o["OutputKey"] == "AlarmTopicArn"), None)
    if topic is None:
        return silent
    try:
        subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    except (ClientError, BotoCoreError) as exc:
        return _unchecked(check, exc, "sns:ListSubscriptionsByTopic")
    confirmed = [s for s in subscriptions if s.get("SubscriptionArn", "").startswith("arn:")]
    if confirmed:
        return Finding(check, Status.OK, f"{len(confirmed)} confirmed subscription(s) of {topic}")
    return silent


# AWS Batch and ECS create theirs at first use when the deployer may (iam:CreateServiceLinkedRole); spot
# capacity needs EC2 Spot's, which is created only by some console flows.
SERVICE_LINKED_ROLES = {"AWSServiceRoleForBatch": "batch.amazonaws.com", "AWSServiceRoleForECS": "ecs.amazonaws.com",
                        "AWSServiceRoleForEC2Spot": "spot.amazonaws.com"}


def check_service_linked_roles(iam: Client, config: InfraConfig) -> Finding:
    check = "Service-linked roles"
    wanted = {r: s for r, s in SERVICE_LINKED_ROLES.items() if config.use_spot or s != "spot.amazonaws.com"}
    missing = []
    for role, service in wanted.items():
        try:
            iam.get_role(RoleName=role)
        except ClientError as exc:
            if _error_code(exc) != "NoSuchEntity":
                return _unchecked(check, exc, "iam:GetRole")
            missing.append((role, service))
        except BotoCoreError as exc:
            return _unchecked(check, exc, "iam:GetRole")
    if missing:
        return Finding(check, Status.WARN, f"missing: {', '.join(r for r, _ in missing)} (the compute environment "
                                           "goes INVALID if the deployer may not create them)",
                       " && ".join(f"aws iam create-service-linked-role --aws-service-name {s}" for _, s in missing))
    return Finding(check, Status.OK, ", ".join(wanted))
