"""A Python Lambda the way every function of this app is built: own role, own log group, Powertools."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.config import POWERTOOLS_VERSION
from infra.constructs.bundling import LAMBDA_PYTHON_VERSION, LAMBDA_RUNTIME
from infra.constructs.nag import acknowledge

POWERTOOLS_PARAMETER = "/aws/service/powertools/python/x86_64/python{python}/{version}"


def powertools_parameter_name(version: str = POWERTOOLS_VERSION) -> str:
    """AWS's public SSM parameter that holds the ARN of Powertools' layer `version` for our runtime."""
    return POWERTOOLS_PARAMETER.format(python=LAMBDA_PYTHON_VERSION, version=version)


def powertools_layer(scope: Construct, *, version: str) -> lambda_.ILayerVersion:
    """Powertools' public layer, a pinned version; CloudFormation resolves its ARN from AWS's SSM parameter.

    Where AWS has not published that version for this runtime, the deploy stops before creating
    anything, with one line naming the parameter (`upscaler doctor` checks it beforehand).
    """
    arn = ssm.StringParameter.value_for_string_parameter(scope, powertools_parameter_name(version))
    return lambda_.LayerVersion.from_layer_version_arn(scope, "PowertoolsLayer", arn)


def application_log_level(level: str) -> lambda_.ApplicationLogLevel:
    """Python logging level names to Lambda's (WARNING -> WARN, CRITICAL -> FATAL)."""
    name = {"WARNING": "WARN", "CRITICAL": "FATAL"}.get(level.upper(), level.upper())
    return lambda_.ApplicationLogLevel[name]


class PythonFunction(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, handler: str, description: str,
                 code: lambda_.Code, layers: list[lambda_.ILayerVersion], environment: Mapping[str, str],
                 service_name: str, timeout: Duration, memory_mib: int, log_retention: logs.RetentionDays,
                 reserved_concurrency: int | None = None) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention)  # removal: the stack decides
        # An explicit role instead of AWSLambdaBasicExecutionRole: logs go to this one log group only.
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description=description)
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[self.log_group.log_group_arn],
        ))
        self.function = lambda_.Function(
            self, "Function",
            runtime=LAMBDA_RUNTIME,
            architecture=lambda_.Architecture.X86_64,  # matches the manylinux x86_64 wheels bundled
            handler=handler,
            code=code,
            layers=layers,
            description=description,
            environment={**environment, "POWERTOOLS_SERVICE_NAME": service_name},
            timeout=timeout,
            memory_size=memory_mib,
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            # Lambda's log-level control, which Powertools' Logger honours: the one log_level setting.
            application_log_level_v2=application_log_level(environment.get("UPSCALER_LOG_LEVEL", "INFO")),
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=reserved_concurrency,
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions.",
        )
