"""The whole pipeline in one stack: storage, intake, GPU batch, notifications, failure notifier, monitoring.

The Lambdas and the Batch job get their environment from common.settings.Settings.to_env(), built
from the deployment config with the generated resource names filled in, so every component reads
the same names and limits the stack was built with. Every physical name is CloudFormation's or derived
from the stack name (and region where the name is account-wide), so a second stack fits beside it.
"""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, CfnResource, Duration, Environment, Fn, RemovalPolicy, Stack, Tags
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import custom_resources as cr
from constructs import Construct

from common.settings import METRICS_NAMESPACE, Settings
from infra.config import LOG_RETENTION_DAYS, InfraConfig
from infra.constructs.api import HttpApi
from infra.constructs.batch import GpuBatch
from infra.constructs.bundling import lambda_code
from infra.constructs.intake import JOB_TABLE_ACTIONS, Intake
from infra.constructs.lambdas import powertools_layer
from infra.constructs.monitoring import Monitoring
from infra.constructs.nag import acknowledge, acknowledge_object_prefix
from infra.constructs.network import EndpointTargets, Network
from infra.constructs.notifications import Notifications
from infra.constructs.notifier import FailureNotifier
from infra.constructs.scaler import WorkerScaler
from infra.constructs.static_site import StaticSite, page_config
from infra.constructs.storage import Storage, grant_list_prefix
from infra.constructs.sweeper import Sweeper
from infra.constructs.webhook_delivery import WebhookDelivery
from infra.constructs.work_queue import WorkQueue


class UpscalerStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig,
                 env: Environment | None = None) -> None:
        super().__init__(scope, construct_id, env=env,
                         description="Real-ESRGAN image upscaling: S3 -> SQS -> Lambda -> Batch GPU -> S3 + SNS")
        Tags.of(self).add("app", config.settings.app_name)
        retention = log_retention(config.log_retention_days)

        storage = Storage(self, "Storage", config=config, settings=config.settings)
        notifications = Notifications(self, "Notifications", webhooks=config.webhooks)
        network = Network(self, "Network", config=config, log_retention=retention)
        work = WorkQueue(self, "Work", settings=config.settings)

        # Names the stack generates replace the local defaults; the rest comes from the config.
        shared = config.settings.replace(
            region=Aws.REGION,
            input_bucket=storage.input_bucket.bucket_name,
            output_bucket=storage.output_bucket.bucket_name,
            jobs_table=storage.table.table_name,
            topic_arn=notifications.topic.topic_arn,
            work_queue_url=work.queue.queue_url,
            job_backend="batch",
            endpoint_url=None,
            local_batch_url="",
            max_workers=config.max_workers,
            webhook_blocked_cidrs=network.vpc.vpc_cidr_block,  # per-request webhooks never reach this VPC
            webhook_allow_local=False,
            job_queue="",  # the workers submit nothing; the functions get the ARNs below
            job_definition="",
        )
        gpu = GpuBatch(self, "Batch", config=config, settings=config.settings,
                       environment=component_environment(shared), network=network, log_retention=retention)
        grant_worker_access(gpu, storage=storage, notifications=notifications, settings=config.settings)
        work.grant_work(gpu.job_role)
        # What the workers can reach through the VPC endpoints: this stack's resources, nothing else.
        # queue_arns: the one queue the workers use (the work DLQ is drained by the notifier Lambda, outside the VPC).
        network.limit_endpoints_to(EndpointTargets(
            buckets=[storage.input_bucket, storage.output_bucket], table=storage.table,
            topic=notifications.topic, queue_arns=[work.queue.queue_arn], log_groups=[gpu.log_group]))

        # The Lambdas submit with ARNs: the definition ARN pins the revision this deployment created.
        function_settings = shared.replace(job_queue=gpu.job_queue.job_queue_arn,
                                           job_definition=gpu.job_definition.job_definition_arn)
        code = lambda_code()
        layers = [powertools_layer(self, version=config.powertools_version)]
        metrics_namespace = stack_metrics_namespace(config.stack_name)
        function_environment = {**component_environment(function_settings),
                                "POWERTOOLS_METRICS_NAMESPACE": metrics_namespace}
        intake = Intake(self, "Intake", config=config, settings=config.settings,
                        environment=function_environment, code=code, layers=layers,
                        input_bucket=storage.input_bucket, table=storage.table, notifications=notifications,
                        work_queue=work, job_queue=gpu.job_queue, job_definition=gpu.job_definition,
                        log_retention=retention)
        notifier = FailureNotifier(self, "FailureNotifier", config=config, environment=function_environment,
                                   code=code, layers=layers, table=storage.table, notifications=notifications,
                                   work_queue=work, log_retention=retention)
        api, site = http_api(self, config, storage=storage, notifications=notifications, code=code, layers=layers,
                             environment=function_environment, log_retention=retention)
        scaler = WorkerScaler(self, "Scaler", environment=function_environment, code=code, layers=layers,
                              table=storage.table, work_queue=work, job_queue=gpu.job_queue,
                              job_definition=gpu.job_definition, memory_mib=config.notifier_memory_mib,
                              log_retention=retention)
        sweeper = Sweeper(self, "Sweeper", environment=component_environment(function_settings.replace(
                              intake_queue_url=intake.queue.queue_url,
                              intake_dlq_url=intake.dead_letter_queue.queue_url)),
                          code=code, layers=layers, table=storage.table, notifications=notifications,
                          work_queue=work, intake_queue=intake.queue, intake_dead_letter_queue=intake.dead_letter_queue,
                          memory_mib=config.notifier_memory_mib, log_retention=retention)
        webhooks = WebhookDelivery(self, "WebhookDelivery", environment=function_environment, code=code,
                                   layers=layers, topic=notifications.topic, table=storage.table,
                                   memory_mib=config.notifier_memory_mib, log_retention=retention)

        self.monitoring = Monitoring(
            self, "Monitoring",
            # Dashboards are account-wide: the region keeps one stack name in two regions apart.
            dashboard_name=Fn.join("-", [construct_id, Aws.REGION]),
            key=notifications.key,
            alarm_email=config.alarm_email,
            dead_letter_queues={"Intake": intake.dead_letter_queue, "Work": work.dead_letter_queue,
                                "ScalerEvents": scaler.dead_letter_queue, "SweeperEvents": sweeper.dead_letter_queue,
                                "WebhookDelivery": webhooks.dead_letter_queue,
                                **{f"Webhook{i}": q for i, q in enumerate(notifications.webhook_dlqs.values(), 1)}},
            functions={"Intake": intake.function, "Notifier": notifier.function, "Scaler": scaler.function,
                       "Sweeper": sweeper.function, "WebhookDelivery": webhooks.function,
                       "Api": api.function},
            intake_queue=intake.queue,
            work_queue=work.queue,
            worker_start_wait=scaler_metric("WorkerStartWaitSeconds", metrics_namespace),
            live_workers=scaler_metric("LiveWorkers", metrics_namespace),
            job_queue=gpu.job_queue,
        )
        _acknowledge_cdk_internals(self)
        _log_cdk_helpers(self, config.log_retention_days)
        # Logs are the audit trail of what ran on users' images: they outlive the stack with its data.
        _apply_to_log_groups(self, RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY)
        self.storage, self.notifications, self.network, self.gpu = storage, notifications, network, gpu
        self.intake, self.notifier, self.scaler, self.work = intake, notifier, scaler, work
        self.sweeper, self.webhooks = sweeper, webhooks
        self.api, self.site = api, site

        s = config.settings
        for name, value, description in (
            ("InputBucketName", storage.input_bucket.bucket_name, f"Upload images under s3://<this>/{s.upload_prefix}"),
            ("UploadPrefix", s.upload_prefix, "Key prefix that triggers processing"),
            ("OutputBucketName", storage.output_bucket.bucket_name, f"Results under {s.output_prefix}"),
            ("NotificationTopicArn", notifications.topic.topic_arn, "Subscribe webhooks here"),
            ("WebhookSigningSecretArn", webhooks.secret.secret_arn,
             "Per-request webhooks are signed with this secret (docs/webhooks.md)"),
            ("AlarmTopicArn", self.monitoring.alarm_topic.topic_arn, "CloudWatch alarms publish here"),
            ("JobsTableName", storage.table.table_name, "Job records (state, timings, errors)"),
            ("WorkQueueUrl", work.queue.queue_url, "One item per accepted upload; the GPU workers drain it"),
            ("JobQueueArn", gpu.job_queue.job_queue_arn, "AWS Batch GPU job queue"),
            ("JobDefinitionArn", gpu.job_definition.job_definition_arn, "Worker job definition (this revision)"),
            ("DashboardName", self.monitoring.dashboard.dashboard_name, "CloudWatch dashboard"),
            ("ApiUrl", api.url, "The HTTP API (docs/api.md): upscaler submit --api-url <this>"),
            ("ApiCallerPolicyArn", api.caller_policy.managed_policy_arn, "Attach to whoever calls the API (IAM)"),
            *((("WebUrl", site.url, "The try-it page"),) if site else ()),
        ):
            CfnOutput(self, name, value=value, description=description)


def http_api(scope: Stack, config: InfraConfig, *, storage: Storage, notifications: Notifications,
             code: lambda_.Code, layers: list[lambda_.ILayerVersion], environment: dict[str, str],
             log_retention: logs.RetentionDays) -> tuple[HttpApi, StaticSite | None]:
    """The HTTP API and, unless turned off, its try-it page: the page's origin may call the API (CORS) and POST
    uploads to the input bucket; the page learns the API's URL from its config.json."""
    site = StaticSite(scope, "Web", access_logs=storage.access_logs,
                      jwt_issuer=config.api_jwt_issuer) if config.api_web else None
    origins = [site.url] if site else []
    api = HttpApi(scope, "Api", config=config, settings=config.settings, environment=environment, code=code,
                  layers=layers, input_bucket=storage.input_bucket, output_bucket=storage.output_bucket,
                  table=storage.table, notifications=notifications, log_retention=log_retention, cors_origins=origins)
    if site:
        storage.input_bucket.add_cors_rule(allowed_methods=[s3.HttpMethods.POST], allowed_origins=origins,
                                           allowed_headers=["*"], max_age=3600)
        site.publish(page_config(api_url=api.url, region=Aws.REGION, jwt_issuer=config.api_jwt_issuer,
                                 jwt_client_id=next(iter(config.api_jwt_audience), None)))
    return api, site


def stack_metrics_namespace(stack_name: str) -> str:
    """The Lambdas' EMF namespace (POWERTOOLS_METRICS_NAMESPACE): one per stack, so that two stacks in one
    account and region never feed each other's alarms."""
    return f"{METRICS_NAMESPACE}/{stack_name}"


def scaler_metric(name: str, namespace: str) -> cloudwatch.Metric:
    """A metric the scaler Lambda publishes (Powertools EMF, the stack's namespace, dimension service)."""
    return cloudwatch.Metric(namespace=namespace, metric_name=name,
                             dimensions_map={"service": "upscaler-scaler"}, statistic="Maximum",
                             period=Duration.minutes(1))


def component_environment(settings: Settings) -> dict[str, str]:
    """Settings.to_env() without empty values: "" means "use the default", and an empty variable would
    override what the worker image sets itself (UPSCALER_MODEL_DIR=/opt/models)."""
    return {name: value for name, value in settings.to_env().items() if value != ""}


def _acknowledge_cdk_internals(stack: Stack) -> None:
    """Findings on resources CDK itself adds (the S3 notification custom resource), not on ours."""
    for child in stack.node.children:
        if child.node.id.startswith("BucketNotificationsHandler"):
            acknowledge(child.node.find_child("Role"),
                        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                        "AWSLambdaBasicExecutionRole]",
                        "CDK's singleton that configures S3 bucket notifications at deploy time; it only logs.")
        if child.node.id == f"AWS{cr.AwsCustomResource.PROVIDER_FUNCTION_UUID.replace('-', '')}":
            acknowledge(child.node.find_child("ServiceRole"),
                        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                        "AWSLambdaBasicExecutionRole]",
                        "CDK's AwsCustomResource singleton (deploy-time prefix-list lookups); the policy only logs.")


def _log_cdk_helpers(stack: Stack, days: int) -> None:
    """CDK's own helper functions (S3 notifications, custom resources) log to a group with the stack's
    retention, not to an implicit /aws/lambda group kept forever. Their roles carry
    AWSLambdaBasicExecutionRole, which writes to any group."""
    for function in [c for c in stack.node.find_all()
                     if isinstance(c, CfnResource) and c.cfn_resource_type == "AWS::Lambda::Function"]:
        if isinstance(function, lambda_.CfnFunction) and function.logging_config is not None:
            continue  # ours (PythonFunction) and any function given a log group
        owner = function.node.scope
        assert isinstance(owner, Construct)
        managed = owner.node.try_find_child("LogGroup")
        if isinstance(managed, logs.LogGroup):  # the feature flag's CDK-managed group (AwsCustomResource)
            resource = managed.node.default_child
            assert isinstance(resource, logs.CfnLogGroup)
            resource.retention_in_days = days
            continue
        group = logs.CfnLogGroup(owner, f"{function.node.id}Logs", retention_in_days=days)
        function.add_property_override("LoggingConfig.LogGroup", group.ref)


def _apply_to_log_groups(stack: Stack, policy: RemovalPolicy) -> None:
    for construct in stack.node.find_all():
        if isinstance(construct, logs.CfnLogGroup):
            construct.apply_removal_policy(policy)


def log_retention(days: int) -> logs.RetentionDays:
    """CloudWatch's retention enum for a number of days (the config validated the number)."""
    members = [m for m in logs.RetentionDays if m is not logs.RetentionDays.INFINITE]
    return dict(zip(LOG_RETENTION_DAYS, members, strict=True))[days]


def grant_worker_access(gpu: GpuBatch, *, storage: Storage, notifications: Notifications, settings: Settings) -> None:
    """The worker reads uploads and writes outputs; nothing else in either bucket."""
    role = gpu.job_role
    role.add_to_policy(iam.PolicyStatement(
        sid="ReadUploads", actions=["s3:GetObject", "s3:GetObjectVersion"],
        resources=[storage.input_bucket.arn_for_objects(f"{settings.upload_prefix}*")],
    ))
    # Get on outputs too: the worker signs the (version-pinned) presigned URL, and S3 authorises a
    # presigned GET as the signer. Abort: a failed multipart upload of a large output is cleaned up. Delete: an
    # older version's output under another format's name (gpu_batch/worker/outputs.py), conditional on its ETag.
    role.add_to_policy(iam.PolicyStatement(
        sid="WriteAndPresignOutputs",
        actions=["s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject", "s3:GetObjectVersion",
                 "s3:DeleteObject"],
        resources=[storage.output_bucket.arn_for_objects(f"{settings.output_prefix}*")],
    ))
    grant_list_prefix(role, storage.output_bucket, settings.output_prefix, sid="SeeMissingOutputs")
    role.add_to_policy(iam.PolicyStatement(sid="JobRecords", actions=JOB_TABLE_ACTIONS,
                                           resources=[storage.table.table_arn]))
    notifications.grant_publish(role)
    acknowledge_object_prefix(role, storage.input_bucket, settings.upload_prefix,
                              "The worker reads whichever upload its job names: any object under the upload prefix.")
    acknowledge_object_prefix(role, storage.output_bucket, settings.output_prefix,
                              "The worker writes (and presigns) the output its job names, under the output prefix.")

