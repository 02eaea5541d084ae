"""Least privilege: each role can touch only the prefixes, table, queue and topic its job needs."""

from __future__ import annotations

from typing import Any

# The only actions that may use Resource "*": AWS offers no resource-level permissions for them.
UNSCOPABLE_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "ecr:GetAuthorizationToken",
                      "ec2:DescribeManagedPrefixLists",  # the deploy-time prefix-list lookup (network.py)
                      "batch:DescribeJobs"}  # the scaler finds the workers on a spot instance about to go


def _objects(synth: Any, bucket: Any, prefix: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [{"Fn::GetAtt": [synth.logical_id(bucket), "Arn"]}, f"/{prefix}*"]]}


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _s3_statements(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in statements if any(a.startswith("s3:") for a in _listify(s["Action"]))]


def test_intake_reads_only_uploads_and_writes_only_rejected(default: Any) -> None:
    role, settings = default.stack.intake.handler.role, default.config.settings
    bucket = default.stack.storage.input_bucket
    s3_statements = _s3_statements(default.role_statements(role))
    assert {s["Sid"] for s in s3_statements} == {"ReadAndMoveUploads", "WriteRejected", "SeeMissingUploads"}
    _assert_lists_only(default, role, "SeeMissingUploads", bucket, settings.upload_prefix)
    read = default.statement(role, "ReadAndMoveUploads")
    assert read["Resource"] == _objects(default, bucket, settings.upload_prefix)
    assert not any(a.startswith("s3:Put") for a in read["Action"])
    write = default.statement(role, "WriteRejected")
    assert write["Resource"] == _objects(default, bucket, settings.rejected_prefix)
    assert set(write["Action"]) == {"s3:PutObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload"}


def test_intake_and_scaler_start_workers_only_in_this_queue_with_this_definition(default: Any) -> None:
    gpu = default.stack.gpu
    for role in (default.stack.intake.handler.role, default.stack.scaler.handler.role):
        submit = default.statement(role, "StartWorkers")
        assert submit["Action"] == "batch:SubmitJob"
        assert submit["Resource"] == [{"Fn::GetAtt": [default.logical_id(gpu.job_queue), "JobQueueArn"]},
                                      {"Ref": default.logical_id(gpu.job_definition)}]
        tag = default.statement(role, "TagWorkerJobs")
        assert tag["Condition"] == {"StringEquals": {"batch:CreateAction": "SubmitJob"}}
        slots = default.statement(role, "WorkerSlots")  # slots are records in the jobs table, all read at once
        assert "dynamodb:BatchGetItem" in slots["Action"]
        assert slots["Resource"] == {"Fn::GetAtt": [default.logical_id(default.stack.storage.table), "Arn"]}


def test_work_queue_access_is_least_privilege(default: Any) -> None:
    work = {"Fn::GetAtt": [default.logical_id(default.stack.work.queue), "Arn"]}
    drain = default.statement(default.stack.gpu.job_role, "DrainWorkQueue")
    assert (sorted(drain["Action"]), drain["Resource"]) == (
        ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:ReceiveMessage", "sqs:SendMessage"], work)
    send = default.statement(default.stack.intake.handler.role, "SendWorkItems")
    assert (sorted(send["Action"]), send["Resource"]) == (["sqs:GetQueueAttributes", "sqs:SendMessage"], work)
    depth = default.statement(default.stack.scaler.handler.role, "ReadWorkQueueDepth")
    assert (depth["Action"], depth["Resource"]) == ("sqs:GetQueueAttributes", work)
    every_sqs_action = {a for r in (default.stack.gpu.job_role, default.stack.intake.handler.role)
                        for st in default.role_statements(r)
                        for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
                        if a.startswith("sqs:")}
    worker_sqs = [st for st in default.role_statements(default.stack.gpu.job_role)
                  if any(a.startswith("sqs:") for a in _listify(st["Action"]))]
    assert [st["Resource"] for st in worker_sqs] == [work]  # a give-back's fresh copy: to its own queue only
    assert every_sqs_action  # the intake's event source mapping grants its own receive on the intake queue


def test_worker_reads_inputs_and_writes_outputs_only(default: Any) -> None:
    role, settings, storage = default.stack.gpu.job_role, default.config.settings, default.stack.storage
    s3_statements = _s3_statements(default.role_statements(role))
    assert {s["Sid"] for s in s3_statements} == {"ReadUploads", "WriteAndPresignOutputs", "SeeMissingOutputs"}
    read = default.statement(role, "ReadUploads")
    assert read["Resource"] == _objects(default, storage.input_bucket, settings.upload_prefix)
    assert set(read["Action"]) == {"s3:GetObject", "s3:GetObjectVersion"}
    write = default.statement(role, "WriteAndPresignOutputs")
    assert write["Resource"] == _objects(default, storage.output_bucket, settings.output_prefix)
    # Delete only a current version (a delete marker), never DeleteObjectVersion: nothing written is lost
    assert "s3:DeleteObject" in write["Action"] and "s3:DeleteObjectVersion" not in write["Action"]
    _assert_lists_only(default, role, "SeeMissingOutputs", storage.output_bucket, settings.output_prefix)


def _assert_lists_only(synth: Any, role: Any, sid: str, bucket: Any, prefix: str) -> None:
    """ListBucket under one prefix: a HEAD of a missing key answers 404 instead of 403."""
    listing = synth.statement(role, sid)
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Resource"] == {"Fn::GetAtt": [synth.logical_id(bucket), "Arn"]}
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{prefix}*"]}}


def test_job_records_and_notifications_are_scoped_to_this_stack(default: Any) -> None:
    table = {"Fn::GetAtt": [default.logical_id(default.stack.storage.table), "Arn"]}
    topic = {"Ref": default.logical_id(default.stack.notifications.topic)}
    key = {"Fn::GetAtt": [default.logical_id(default.stack.notifications.key), "Arn"]}
    for role in (default.stack.intake.handler.role, default.stack.notifier.handler.role, default.stack.gpu.job_role):
        assert default.statement(role, "JobRecords")["Resource"] == table
        assert default.statement(role, "PublishNotifications")["Resource"] == topic
        assert default.statement(role, "EncryptNotifications")["Resource"] == key
        assert not any(a.startswith("dynamodb:Delete") or a == "dynamodb:Scan"
                       for s in default.role_statements(role) for a in _listify(s["Action"]))


def test_no_wildcard_resource_where_a_narrower_one_exists(default: Any, variant: Any) -> None:
    for synth in (default, variant):
        policies = [p["Properties"]["PolicyDocument"] for p in synth.resources("AWS::IAM::Policy").values()]
        policies += [inline["PolicyDocument"] for role in synth.resources("AWS::IAM::Role").values()
                     for inline in role["Properties"].get("Policies", [])]
        for document in policies:
            for statement in document["Statement"]:
                actions = set(_listify(statement["Action"]))
                assert "*" not in actions and not any(a.endswith(":*") for a in actions), statement
                if "*" in _listify(statement["Resource"]):
                    assert actions <= UNSCOPABLE_ACTIONS, statement


def test_lambda_roles_use_no_managed_policies(default: Any) -> None:
    for role in (default.stack.intake.handler.role, default.stack.notifier.handler.role, default.stack.gpu.job_role,
                 default.stack.gpu.execution_role):
        assert "ManagedPolicyArns" not in default.raw["Resources"][default.logical_id(role)]["Properties"]
