"""Which AWS call a hand-made request is (the S3 calls the proxy test cannot easily make), and which terminal
state a DynamoDB write sets."""

from __future__ import annotations

import json

import pytest

from local_stack.faults.operations import AwsRequest, inference_mark_written, terminal_state_written

S3_AUTH = {"authorization": "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, SignedHeaders=host"}


@pytest.mark.parametrize(("method", "path", "query", "extra", "operation"), [
    ("POST", "/b/k.png", "uploads", {}, "CreateMultipartUpload"),
    ("PUT", "/b/k.png", "partNumber=1&uploadId=u", {}, "UploadPart"),
    ("PUT", "/b/k.png", "partNumber=1&uploadId=u", {"x-amz-copy-source": "b/o"}, "UploadPartCopy"),
    ("POST", "/b/k.png", "uploadId=u", {}, "CompleteMultipartUpload"),
    ("DELETE", "/b/k.png", "uploadId=u", {}, "AbortMultipartUpload"),
    ("GET", "/b", "list-type=2&prefix=outputs%2F", {}, "ListObjectsV2"),
    ("POST", "/b", "delete", {}, "DeleteObjects"),
    ("HEAD", "/b", "", {}, "HeadBucket"),
    ("GET", "/", "", {}, "ListBuckets"),
    ("GET", "/b/uploads/a%20b.png", "versionId=v1", {}, "GetObject"),
])
def test_s3_operations_come_from_method_path_and_query(method: str, path: str, query: str, extra: dict[str, str],
                                                      operation: str) -> None:
    request = AwsRequest(method, path, query, {**S3_AUTH, **extra})
    assert (request.service, request.operation) == ("s3", operation)


def test_presigned_urls_name_s3_by_their_query() -> None:
    v4 = AwsRequest("GET", "/b/k", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20260101%2Fus-east-1"
                                   "%2Fs3%2Faws4_request&X-Amz-Signature=abc", {})
    v2 = AwsRequest("GET", "/b/k", "AWSAccessKeyId=AKID&Signature=abc%3D&Expires=1", {})
    assert (v4.service, v4.operation) == (v2.service, v2.operation) == ("s3", "GetObject")
    assert v4.bucket_and_key == ("b", "k")


def test_json_and_query_protocols_name_their_operation() -> None:
    ddb = AwsRequest("POST", "/", "", {"x-amz-target": "DynamoDB_20120810.TransactWriteItems"})
    sqs = AwsRequest("POST", "/", "", {"x-amz-target": "AmazonSQS.ChangeMessageVisibility"})
    sns = AwsRequest("POST", "/", "", {"content-type": "application/x-www-form-urlencoded; charset=utf-8",
                                       "authorization": "AWS4-HMAC-SHA256 Credential=A/20260101/eu-west-1/sns/"
                                                        "aws4_request"}, b"Action=Publish&Message=%7B%22a%22%7D")
    assert [(r.service, r.operation) for r in (ddb, sqs, sns)] == [
        ("dynamodb", "TransactWriteItems"), ("sqs", "ChangeMessageVisibility"), ("sns", "Publish")]
    assert '{"a"}' in sns.text  # the form decoded: a job id or key in it can be found


def update(expression: str, names: dict[str, str], values: dict[str, str]) -> dict[str, object]:
    return {"UpdateExpression": expression, "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {k: {"S": v} for k, v in values.items()}}


@pytest.mark.parametrize(("operation", "body", "state"), [
    ("UpdateItem", update("SET #s0 = :s0, #s1 = :s1 REMOVE #r0", {"#s0": "updated_at", "#s1": "state", "#r0": "t"},
                          {":s0": "now", ":s1": "SUPERSEDED"}), "SUPERSEDED"),
    ("UpdateItem", update("SET #s0 = :s0", {"#s0": "state"}, {":s0": "RUNNING"}), None),
    # a terminal state in the condition only: no terminal write
    ("UpdateItem", {**update("SET #s0 = :s0", {"#s0": "notified", "#c0": "state"}, {":s0": "x", ":c0": "FAILED"}),
                    "ConditionExpression": "#c0 = :c0"}, None),
    ("PutItem", {"Item": {"job_id": {"S": "j"}, "state": {"S": "REJECTED"}}}, "REJECTED"),
    ("PutItem", {"Item": {"job_id": {"S": "j"}, "state": {"S": "ACCEPTED"}}}, None),
    ("GetItem", {"Key": {"job_id": {"S": "j"}}}, None),
])
def test_the_terminal_state_a_write_sets(operation: str, body: dict[str, object], state: str | None) -> None:
    assert terminal_state_written(operation, body) == state
    request = AwsRequest("POST", "/", "", {"x-amz-target": f"DynamoDB_20120810.{operation}",
                                           "content-type": "application/x-amz-json-1.0"}, json.dumps(body).encode())
    assert request.terminal_state == state


@pytest.mark.parametrize(("expression", "names", "mark"), [
    ("SET #s0 = :s0", {"#s0": "inference_token"}, True),  # inference starts
    ("REMOVE #r0", {"#r0": "inference_token"}, False),  # inference over
    ("SET #s0 = :s0 REMOVE #r0, #r1, #r2 ADD #d0 :d0",  # the job finished, or its item was given back
     {"#s0": "state", "#r0": "claim_token", "#r1": "claim_until", "#r2": "inference_token", "#d0": "failures"}, False),
    ("SET #s0 = :s0, #s1 = :s1", {"#s0": "claim_token", "#s1": "state"}, None),  # a claim
])
def test_the_inference_mark_a_write_sets_or_clears(expression: str, names: dict[str, str], mark: bool | None) -> None:
    body = update(expression, names, {":s0": "x", ":s1": "y"})
    assert inference_mark_written("UpdateItem", body) is mark
    assert inference_mark_written("PutItem", body) is None
