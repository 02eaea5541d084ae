"""The HTTP API: API Gateway HTTP API -> one Lambda (functions/api), an authorizer on every route.

Routes come from the committed OpenAPI document (docs/openapi.json, checked against the code in CI), so the
deployed API has exactly the routes the handler serves. Every route takes SigV4 (IAM authorization), or, when
the deployment names an OIDC issuer, that issuer's JWTs instead. Throttled per route at the stage; the Lambda
bounds request bodies. Callers need `execute-api:Invoke`: the ApiCallerPolicy output is a managed policy that
grants exactly that, to attach to a user or role.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from aws_cdk import Aws, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from common.api_uploads import API_FOLDER
from common.jobs import CALLER_INDEX
from common.settings import Settings
from infra.config import REPO_ROOT, InfraConfig
from infra.constructs.lambdas import PythonFunction
from infra.constructs.nag import acknowledge, acknowledge_object_prefix
from infra.constructs.notifications import Notifications

API_HANDLER = "functions.api.handler.lambda_handler"
OPENAPI_DOCUMENT = REPO_ROOT / "docs" / "openapi.json"
CREATE_ROUTE = "POST /v1/jobs"
# What the API's logic does to a record (common.lifecycle through common.jobs): read, create, conditional
# updates, and the caller index's query.
API_TABLE_ACTIONS = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId", "ip": "$context.identity.sourceIp", "caller": "$context.identity.userArn",
    "jwtSubject": "$context.authorizer.claims.sub", "requestTime": "$context.requestTime",
    "routeKey": "$context.routeKey", "status": "$context.status", "responseLength": "$context.responseLength",
    "integrationLatency": "$context.integrationLatency", "authorizerError": "$context.authorizer.error",
}


def api_routes(document: Mapping[str, object] | None = None) -> list[tuple[str, str]]:
    """(method, path) of every operation in the OpenAPI document, in its `/v1/jobs/{job_id}` spelling."""
    doc = document if document is not None else json.loads(OPENAPI_DOCUMENT.read_text())
    paths = doc["paths"]
    assert isinstance(paths, Mapping)
    return sorted((method.upper(), path) for path, operations in paths.items() for method in operations)


class HttpApi(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, settings: Settings,
                 environment: Mapping[str, str], code: lambda_.Code, layers: list[lambda_.ILayerVersion],
                 input_bucket: s3.IBucket, output_bucket: s3.IBucket, table: dynamodb.ITable,
                 notifications: Notifications, log_retention: logs.RetentionDays,
                 cors_origins: Sequence[str] = ()) -> None:
        super().__init__(scope, construct_id)
        self.handler = PythonFunction(
            self, "Handler", handler=API_HANDLER,
            description="The HTTP API: creates jobs with presigned uploads, reads, lists and cancels them",
            code=code, layers=layers, environment=environment, service_name="upscaler-api",
            timeout=Duration.seconds(15), memory_mib=config.api_memory_mib, log_retention=log_retention)
        self.function = self.handler.function
        self._grant(settings=settings, input_bucket=input_bucket, output_bucket=output_bucket, table=table,
                    notifications=notifications)

        self.authorizer: apigw.IHttpRouteAuthorizer = (
            authorizers.HttpJwtAuthorizer("Jwt", config.api_jwt_issuer, jwt_audience=list(config.api_jwt_audience),
                                          authorizer_name=Fn.join("-", [Aws.STACK_NAME, "jwt"]))
            if config.api_jwt_issuer else authorizers.HttpIamAuthorizer())
        cors = apigw.CorsPreflightOptions(
            allow_origins=list(cors_origins), max_age=Duration.hours(1),
            allow_methods=[apigw.CorsHttpMethod.GET, apigw.CorsHttpMethod.POST, apigw.CorsHttpMethod.DELETE],
            allow_headers=["authorization", "content-type", "x-amz-date", "x-amz-security-token",
                           "x-amz-content-sha256"],
            expose_headers=["location"]) if cors_origins else None
        self.api = apigw.HttpApi(self, "Api", description="Upscaler HTTP API (docs/api.md)",
                                 api_name=Fn.join("-", [Aws.STACK_NAME, "api"]),
                                 default_authorizer=self.authorizer, cors_preflight=cors,
                                 create_default_stage=True)
        integration = integrations.HttpLambdaIntegration(
            "Lambda", self.function, payload_format_version=apigw.PayloadFormatVersion.VERSION_2_0)
        for method, path in api_routes():
            self.api.add_routes(path=path, methods=[apigw.HttpMethod(method)], integration=integration)
        self._stage(config, log_retention)

        # Who may call it (IAM mode): attach this to a user or role.
        self.caller_policy = iam.ManagedPolicy(self, "CallerPolicy", description="Call the Upscaler HTTP API",
                                               statements=[iam.PolicyStatement(
                                                   actions=["execute-api:Invoke"],
                                                   resources=[self.api.arn_for_execute_api("*", "/v1/*")])])
        api_id = Stack.of(self).resolve(Stack.of(self).get_logical_id(self.api.node.default_child))  # type: ignore[arg-type]
        acknowledge(self.caller_policy, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:"
                    f"<AWS::AccountId>:<{api_id}>/*/*/v1/*]",
                    "Invoke on every /v1 route of this one API, any method and stage: the API itself decides per job.")

    @property
    def url(self) -> str:
        """The API's base URL (the $default stage: no stage in the path)."""
        return str(self.api.api_endpoint)

    def _stage(self, config: InfraConfig, log_retention: logs.RetentionDays) -> None:
        """Access logs and throttling: every route at api_rate_limit, job creation at api_create_rate_limit."""
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=log_retention,
                                         removal_policy=RemovalPolicy.DESTROY)
        stage = self.api.default_stage
        assert stage is not None
        cfn = stage.node.default_child
        assert isinstance(cfn, apigw.CfnStage)
        cfn.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn, format=json.dumps(ACCESS_LOG_FORMAT))
        cfn.default_route_settings = apigw.CfnStage.RouteSettingsProperty(
            throttling_rate_limit=config.api_rate_limit, throttling_burst_limit=config.api_burst_limit,
            detailed_metrics_enabled=True)
        cfn.route_settings = {CREATE_ROUTE: {"ThrottlingRateLimit": config.api_create_rate_limit,
                                             "ThrottlingBurstLimit": config.api_create_burst_limit,
                                             "DetailedMetricsEnabled": True}}
        for route in self.api.node.children:  # the route must exist before its stage settings name it
            if isinstance(route, apigw.HttpRoute):
                cfn.node.add_dependency(route)

    def _grant(self, *, settings: Settings, input_bucket: s3.IBucket, output_bucket: s3.IBucket,
               table: dynamodb.ITable, notifications: Notifications) -> None:
        role = self.handler.role
        role.add_to_policy(iam.PolicyStatement(sid="JobRecords", actions=API_TABLE_ACTIONS,
                                               resources=[table.table_arn]))
        role.add_to_policy(iam.PolicyStatement(sid="CallersJobs", actions=["dynamodb:Query"],
                                               resources=[f"{table.table_arn}/index/{CALLER_INDEX}"]))
        # S3 authorises a presigned request as its signer: the function may put exactly the API's uploads
        # (the POST policy narrows each link to one key) and read the outputs it links.
        api_uploads = f"{settings.upload_prefix}{API_FOLDER}"
        role.add_to_policy(iam.PolicyStatement(sid="PresignUploads", actions=["s3:PutObject"],
                                               resources=[input_bucket.arn_for_objects(f"{api_uploads}*")]))
        role.add_to_policy(iam.PolicyStatement(
            sid="PresignResults", actions=["s3:GetObject", "s3:GetObjectVersion"],
            resources=[output_bucket.arn_for_objects(f"{settings.output_prefix}*")]))
        notifications.grant_publish(role)  # a cancel publishes upscale.cancelled
        acknowledge_object_prefix(role, input_bucket, api_uploads,
                                  "Signs upload links: each one's POST policy names one key under uploads/api/.")
        acknowledge_object_prefix(role, output_bucket, settings.output_prefix,
                                  "Signs download links for the outputs of the caller's own finished jobs.")
