"""Which AWS call an HTTP request is, and the error responses AWS sends, as the fault proxy needs them.

The service comes from the SigV4 credential scope (`Authorization` header, or `X-Amz-Credential` of a
presigned URL; a SigV2 presigned URL is S3's). The operation: DynamoDB and SQS (JSON protocols) name it
in `X-Amz-Target`; SNS (query protocol) in the form's `Action`; S3 (REST) by method, path and query.
Pure functions: unit tests feed them hand-made requests.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from xml.sax.saxutils import escape

from common.contract import TERMINAL_STATES
from common.lifecycle import INFERENCE_TOKEN

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([a-z0-9-]+)/aws4_request")
_QUERY_SCOPE = re.compile(r"^[^/]+/\d{8}/[^/]+/([a-z0-9-]+)/aws4_request$")
_SET_ASSIGNMENT = re.compile(r"(#\w+)\s*=\s*(:\w+)")
_CLAUSE_VERB = re.compile(r"\b(SET|REMOVE|ADD|DELETE)\b")
_TARGET_SERVICES = {"DynamoDB_": "dynamodb", "AmazonSQS": "sqs"}
_TERMINAL_STATES = frozenset(str(state) for state in TERMINAL_STATES)


@dataclass(frozen=True)
class AwsRequest:
    """One HTTP request on its way to AWS (headers with lower-case names)."""

    method: str
    path: str  # without the query
    query: str
    headers: Mapping[str, str]
    body: bytes = b""

    @cached_property
    def service(self) -> str:
        found = _SCOPE.search(self.headers.get("authorization", ""))
        if found:
            return found.group(1)
        credential = self.query_params.get("X-Amz-Credential", "")
        found = _QUERY_SCOPE.match(credential)
        if found:
            return found.group(1)
        if "AWSAccessKeyId" in self.query_params and "Signature" in self.query_params:
            return "s3"  # a presigned URL signed with SigV2, which only S3 still takes
        target = self.headers.get("x-amz-target", "")
        return next((service for prefix, service in _TARGET_SERVICES.items() if target.startswith(prefix)), "")

    @cached_property
    def operation(self) -> str:
        target = self.headers.get("x-amz-target")
        if target:
            return target.rsplit(".", 1)[-1]
        if self.service == "s3":
            return _s3_operation(self)
        return self.form.get("Action") or self.query_params.get("Action", "")

    @cached_property
    def query_params(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.query, keep_blank_values=True))

    @cached_property
    def form(self) -> dict[str, str]:
        if "x-www-form-urlencoded" not in self.headers.get("content-type", ""):
            return {}
        return dict(urllib.parse.parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))

    @cached_property
    def json(self) -> dict[str, Any]:
        if "json" not in self.headers.get("content-type", ""):
            return {}
        try:
            parsed = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}

    @cached_property
    def bucket_and_key(self) -> tuple[str, str]:
        """S3 path-style addressing: /bucket/key (the key unquoted)."""
        bucket, _, key = self.path.lstrip("/").partition("/")
        return urllib.parse.unquote(bucket), urllib.parse.unquote(key)

    @cached_property
    def text(self) -> str:
        """Everything the request says, decoded, to look for a job id or an object key in."""
        body = self.body.decode("utf-8", "replace")
        if self.form:
            body = urllib.parse.unquote_plus(body)
        return f"{urllib.parse.unquote(self.path)}?{urllib.parse.unquote_plus(self.query)}\n{body}"

    @cached_property
    def terminal_state(self) -> str | None:
        """The terminal job state this DynamoDB write sets (UpdateItem SET state, PutItem), else None."""
        return terminal_state_written(self.operation, self.json) if self.service == "dynamodb" else None

    @cached_property
    def inference_mark(self) -> bool | None:
        """For a DynamoDB write: True when it marks a job's inference started, False when it clears that mark."""
        return inference_mark_written(self.operation, self.json) if self.service == "dynamodb" else None

    @cached_property
    def item_job_id(self) -> str:
        """The job id a DynamoDB UpdateItem or PutItem is about ("" for anything else)."""
        key = self.json.get("Key") if self.operation == "UpdateItem" else self.json.get("Item")
        return str((key or {}).get("job_id", {}).get("S", "")) if self.service == "dynamodb" else ""


def terminal_state_written(operation: str, body: Mapping[str, Any]) -> str | None:
    if operation == "PutItem":
        state = (body.get("Item") or {}).get("state", {}).get("S")
        return state if state in _TERMINAL_STATES else None
    values: Mapping[str, Mapping[str, Any]] = body.get("ExpressionAttributeValues") or {}
    for name, value in _update_clauses(operation, body)[0].items():
        if name == "state":
            state = (values.get(value) or {}).get("S")
            return state if state in _TERMINAL_STATES else None
    return None


def inference_mark_written(operation: str, body: Mapping[str, Any]) -> bool | None:
    """True: the UpdateItem sets the job's inference mark (common.lifecycle: dying now counts as a crash);
    False: it removes it (inference over, the item given back, the job finished); None: neither."""
    sets, removes = _update_clauses(operation, body)
    if INFERENCE_TOKEN in sets:
        return True
    return False if INFERENCE_TOKEN in removes else None


def _update_clauses(operation: str, body: Mapping[str, Any]) -> tuple[dict[str, str], set[str]]:
    """An UpdateItem's SET clause (attribute name -> value placeholder) and REMOVE clause (attribute names), the
    names resolved."""
    if operation != "UpdateItem":
        return {}, set()
    names: Mapping[str, str] = body.get("ExpressionAttributeNames") or {}
    parts = _CLAUSE_VERB.split(str(body.get("UpdateExpression") or ""))
    clauses = dict(zip(parts[1::2], parts[2::2], strict=True))
    sets = {names.get(name, name): value for name, value in _SET_ASSIGNMENT.findall(clauses.get("SET", ""))}
    removes = {names.get(n.strip(), n.strip()) for n in clauses.get("REMOVE", "").split(",") if n.strip()}
    return sets, removes


def _s3_operation(request: AwsRequest) -> str:
    bucket, key = request.bucket_and_key
    params, method = request.query_params, request.method
    copy = "x-amz-copy-source" in request.headers
    if not bucket:
        return "ListBuckets"
    if not key:
        bucket_ops = {("GET", "versions"): "ListObjectVersions", ("GET", "list-type"): "ListObjectsV2",
                      ("PUT", "versioning"): "PutBucketVersioning", ("GET", "versioning"): "GetBucketVersioning",
                      ("PUT", "notification"): "PutBucketNotificationConfiguration",
                      ("POST", "delete"): "DeleteObjects"}
        for (verb, param), name in bucket_ops.items():
            if method == verb and param in params:
                return name
        return {"GET": "ListObjects", "PUT": "CreateBucket", "HEAD": "HeadBucket",
                "DELETE": "DeleteBucket"}.get(method, method)
    if "uploadId" in params:
        if method == "PUT":
            return "UploadPartCopy" if copy else "UploadPart"
        return {"POST": "CompleteMultipartUpload", "DELETE": "AbortMultipartUpload",
                "GET": "ListParts"}.get(method, method)
    if method == "POST" and "uploads" in params:
        return "CreateMultipartUpload"
    if method == "PUT":
        return "CopyObject" if copy else "PutObject"
    return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def aws_error(service: str, status: int, code: str, message: str) -> Response:
    """The error response `service` sends (the shape botocore parses into a ClientError with `code`)."""
    request_id = str(uuid.uuid4())
    if service == "dynamodb":
        body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message})
        return Response(status, body.encode(), (("Content-Type", "application/x-amz-json-1.0"),
                                                ("x-amzn-RequestId", request_id)))
    if service == "sqs":
        # SQS speaks JSON but keeps its query-protocol error codes in this header (awsQueryCompatible).
        fault = "Receiver" if status >= 500 else "Sender"
        body = json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message})
        return Response(status, body.encode(), (("Content-Type", "application/x-amz-json-1.0"),
                                                ("x-amzn-RequestId", request_id),
                                                ("x-amzn-query-error", f"{code};{fault}")))
    if service == "s3":
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{escape(message)}'
                f"</Message><RequestId>{request_id}</RequestId></Error>")
        return Response(status, body.encode(), (("Content-Type", "application/xml"),))
    fault = "Receiver" if status >= 500 else "Sender"
    body = (f"<ErrorResponse><Error><Type>{fault}</Type><Code>{code}</Code><Message>{escape(message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>")
    return Response(status, body.encode(), (("Content-Type", "text/xml"),))
