"""Buckets and the jobs table: encrypted, private, TLS-only, versioned, with lifecycles.

A separate output bucket (rather than an output prefix in the input bucket) keeps least privilege
simple: the worker may only read the input bucket's upload prefix and only write the output bucket,
and each bucket gets its own lifecycle and access log prefix. Both use SSE-S3, so presigned GET URLs
work for anyone holding them (SSE-KMS would also need kms:Decrypt for the signer on every download).
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from common.jobs import TTL_ATTRIBUTE, table_definition
from common.settings import Settings
from infra.config import InfraConfig
from infra.constructs.nag import acknowledge

NONCURRENT_VERSION_DAYS = 7  # overwritten/deleted uploads stay recoverable for a week
ACCESS_LOG_DAYS = 90


class Storage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, settings: Settings) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY

        self.access_logs = s3.Bucket(
            self, "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # server access log delivery supports SSE-S3 only
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(ACCESS_LOG_DAYS))],
            removal_policy=removal,
        )
        acknowledge(
            self.access_logs,
            "AwsSolutions-S1",
            "This is the server access log bucket itself; logging it into itself would loop.",
        )

        self.input_bucket = self._bucket(
            "Input", log_prefix="input/", removal=removal,
            rules=[
                s3.LifecycleRule(id="expire-uploads", prefix=settings.upload_prefix,
                                 expiration=Duration.days(config.upload_expiry_days)),
                s3.LifecycleRule(id="expire-rejected", prefix=settings.rejected_prefix,
                                 expiration=Duration.days(config.rejected_expiry_days)),
            ],
        )
        output_rules = []
        if config.output_expiry_days:
            output_rules.append(s3.LifecycleRule(id="expire-outputs", prefix=settings.output_prefix,
                                                 expiration=Duration.days(config.output_expiry_days)))
        self.output_bucket = self._bucket("Output", log_prefix="output/", removal=removal, rules=output_rules)

        definition = table_definition("unused")
        (key,) = definition["KeySchema"]
        (attribute,) = [a for a in definition["AttributeDefinitions"] if a["AttributeName"] == key["AttributeName"]]
        self.table = dynamodb.Table(
            self, "Jobs",
            partition_key=dynamodb.Attribute(name=key["AttributeName"],
                                             type=dynamodb.AttributeType(_ATTRIBUTE_TYPES[attribute["AttributeType"]])),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            time_to_live_attribute=TTL_ATTRIBUTE,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            # The job records are the service's history: a stray `cdk destroy` or console click must not take
            # them. retain_data=false (a stack meant to be thrown away) lifts both guards.
            deletion_protection=config.retain_data,
            removal_policy=removal,
        )
        types = {a["AttributeName"]: a["AttributeType"] for a in definition["AttributeDefinitions"]}
        for index in definition["GlobalSecondaryIndexes"]:  # the sweeper's sparse index (common.lifecycle)
            keys = {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}
            self.table.add_global_secondary_index(
                index_name=index["IndexName"],
                partition_key=dynamodb.Attribute(name=keys["HASH"],
                                                 type=dynamodb.AttributeType(_ATTRIBUTE_TYPES[types[keys["HASH"]]])),
                sort_key=dynamodb.Attribute(name=keys["RANGE"],
                                            type=dynamodb.AttributeType(_ATTRIBUTE_TYPES[types[keys["RANGE"]]])),
                projection_type=dynamodb.ProjectionType(index["Projection"]["ProjectionType"]))

    def _bucket(self, construct_id: str, *, log_prefix: str, removal: RemovalPolicy,
                rules: list[s3.LifecycleRule]) -> s3.Bucket:
        housekeeping = [
            s3.LifecycleRule(id="expire-noncurrent-versions",
                             noncurrent_version_expiration=Duration.days(NONCURRENT_VERSION_DAYS),
                             expired_object_delete_marker=True),
            s3.LifecycleRule(id="abort-incomplete-multipart-uploads",
                             abort_incomplete_multipart_upload_after=Duration.days(1)),
        ]
        return s3.Bucket(
            self, construct_id,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=log_prefix,
            lifecycle_rules=[*rules, *housekeeping],
            removal_policy=removal,
        )


_ATTRIBUTE_TYPES = {"S": "STRING", "N": "NUMBER", "B": "BINARY"}


def grant_list_prefix(role: iam.IRole, bucket: s3.IBucket, prefix: str, *, sid: str) -> None:
    """ListBucket under `prefix` only: without it S3 answers a HEAD of a missing key with 403, not 404
    (Amazon S3 API Reference, HeadObject), and "no output yet" or "the key was deleted" would look like a denial."""
    role.add_to_principal_policy(iam.PolicyStatement(
        sid=sid, actions=["s3:ListBucket"], resources=[bucket.bucket_arn],
        conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}}))
