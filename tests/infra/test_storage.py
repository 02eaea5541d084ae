"""Buckets and the jobs table: encryption, privacy, TLS, versioning, lifecycles, PITR, TTL."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from common.jobs import TTL_ATTRIBUTE, table_definition

BLOCK_ALL = {"BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
             "RestrictPublicBuckets": True}


def _data_buckets(synth: Any) -> dict[str, dict[str, Any]]:
    storage = synth.stack.storage
    return {name: synth.raw["Resources"][synth.logical_id(bucket)]
            for name, bucket in (("input", storage.input_bucket), ("output", storage.output_bucket))}


def test_every_bucket_is_encrypted_private_and_owner_enforced(default: Any) -> None:
    buckets = default.resources("AWS::S3::Bucket")
    assert len(buckets) == 4  # input, output, access logs; the try-it page (tests/infra/test_api.py)
    for bucket in buckets.values():
        props = bucket["Properties"]
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
            "ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert props["PublicAccessBlockConfiguration"] == BLOCK_ALL
        assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]


def test_data_buckets_are_versioned_and_log_access(default: Any) -> None:
    log_bucket = default.logical_id(default.stack.storage.access_logs)
    for name, bucket in _data_buckets(default).items():
        props = bucket["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, name
        assert props["LoggingConfiguration"] == {"DestinationBucketName": {"Ref": log_bucket},
                                                 "LogFilePrefix": f"{name}/"}


def test_every_bucket_policy_denies_plain_http_and_old_tls(default: Any) -> None:
    policies = default.resources("AWS::S3::BucketPolicy")
    assert len(policies) == 4  # the three above and the page's (which also lets CloudFront read it)
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        denies = [s for s in statements if s["Effect"] == "Deny"]
        assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} and s["Action"] == "s3:*"
                   for s in denies)
        assert any(s["Condition"] == {"NumericLessThan": {"s3:TlsVersion": 1.2}} for s in denies)


def test_lifecycles_expire_by_prefix_from_the_settings(default: Any) -> None:
    config, settings = default.config, default.config.settings
    rules = {name: {r["Id"]: r for r in b["Properties"]["LifecycleConfiguration"]["Rules"]}
             for name, b in _data_buckets(default).items()}
    assert rules["input"]["expire-uploads"]["Prefix"] == settings.upload_prefix
    assert rules["input"]["expire-uploads"]["ExpirationInDays"] == config.upload_expiry_days
    assert rules["input"]["expire-rejected"]["Prefix"] == settings.rejected_prefix
    assert rules["input"]["expire-rejected"]["ExpirationInDays"] == config.rejected_expiry_days
    assert rules["output"]["expire-outputs"]["Prefix"] == settings.output_prefix
    for bucket_rules in rules.values():
        assert bucket_rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {
            "DaysAfterInitiation": 1}
        assert "NoncurrentVersionExpiration" in bucket_rules["expire-noncurrent-versions"]


def test_jobs_table_is_on_demand_with_pitr_and_ttl(default: Any) -> None:
    definition = table_definition("any")
    default.template.has_resource_properties("AWS::DynamoDB::Table", {
        "BillingMode": definition["BillingMode"],
        "KeySchema": definition["KeySchema"],
        "AttributeDefinitions": definition["AttributeDefinitions"],
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
        "SSESpecification": Match.object_like({"SSEEnabled": True}),
    })


def test_data_is_retained_unless_the_config_says_otherwise(default: Any, variant: Any) -> None:
    for synth, policy in ((default, "Retain"), (variant, "Delete")):
        page = synth.logical_id(synth.stack.site.bucket) if synth.stack.site else None  # rebuilt every deploy
        for resource in (*(b for k, b in synth.resources("AWS::S3::Bucket").items() if k != page),
                         *synth.resources("AWS::DynamoDB::Table").values()):
            assert resource["DeletionPolicy"] == policy



def test_the_jobs_table_has_deletion_protection_while_data_is_retained(default: Any, variant: Any) -> None:
    assert default.one("AWS::DynamoDB::Table")["DeletionProtectionEnabled"] is True
    assert variant.one("AWS::DynamoDB::Table").get("DeletionProtectionEnabled") in (None, False)  # destroy works


def test_every_log_group_has_retention_and_outlives_the_stack_with_the_data(default: Any, variant: Any) -> None:
    """The worker's, the Lambdas', the flow logs' and CDK's own helper functions' groups: the audit trail."""
    for synth, policy in ((default, "Retain"), (variant, "Delete")):
        groups = synth.resources("AWS::Logs::LogGroup")
        for name, group in groups.items():
            assert group["Properties"]["RetentionInDays"] == synth.config.log_retention_days, name
            assert group["DeletionPolicy"] == policy, name
        for group in (synth.stack.gpu.log_group, synth.stack.intake.handler.log_group):
            assert synth.logical_id(group) in groups


def test_every_function_logs_to_a_group_of_the_stack(default: Any) -> None:
    """Also CDK's helpers (bucket notifications, custom resources): none writes to an implicit group kept forever."""
    groups = default.resources("AWS::Logs::LogGroup")
    for name, function in default.resources("AWS::Lambda::Function").items():
        target = function["Properties"].get("LoggingConfig", {}).get("LogGroup")
        if target is not None:
            assert target["Ref"] in groups, name
        else:  # the feature flag's CDK-managed group, named /aws/lambda/<function>
            assert any(g["Properties"].get("LogGroupName") == {"Fn::Join": ["", ["/aws/lambda/", {"Ref": name}]]}
                       for g in groups.values()), name


def test_dead_letter_queues_keep_messages_longer_than_their_source_queues(default: Any) -> None:
    """SQS expires a message by its original enqueue time, also in the DLQ: the DLQ must keep it longer."""
    queues = default.resources("AWS::SQS::Queue")
    redriven = {name: q["Properties"] for name, q in queues.items() if "RedrivePolicy" in q["Properties"]}
    assert len(redriven) >= 2  # intake and work
    for name, queue in redriven.items():
        dlq = queues[queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]]["Properties"]
        assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"], name
