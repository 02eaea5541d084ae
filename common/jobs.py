"""The job record (DynamoDB) is the single source of truth for a job's state.

Every state change is a conditional write. The caller whose write moves a job into a terminal
state is the one (and only one) that publishes its terminal notification.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from common.contract import JobOptions, JobState, allowed_sources, utc_now_iso


def dedupe_key(bucket: str, key: str, version_id: str | None, etag: str | None, size: int | None) -> str:
    """Identity of one uploaded object version: version id where present, else eTag and size."""
    if version_id and version_id != "null":
        ident = f"v:{version_id}"
    else:
        bare_etag = (etag or "").strip('"')
        ident = f"e:{bare_etag}:{size if size is not None else ''}"
    return f"s3://{bucket}/{key}#{ident}"


def job_id_for(dedupe: str) -> str:
    """Deterministic job id: every delivery of the same object version maps to the same job."""
    return hashlib.sha256(dedupe.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    state: JobState
    dedupe_key: str
    input_bucket: str
    input_key: str
    attributes: Mapping[str, Any]

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> JobRecord:
        plain = {k: _from_dynamo(v) for k, v in item.items()}
        return cls(
            job_id=plain["job_id"],
            state=JobState(plain["state"]),
            dedupe_key=plain.get("dedupe_key", ""),
            input_bucket=plain.get("input_bucket", ""),
            input_key=plain.get("input_key", ""),
            attributes=plain,
        )

    @property
    def options(self) -> JobOptions:
        return JobOptions.from_dict(self.attributes.get("options") or {})


class JobStore:
    """Conditional reads and writes of job records. Thread-safe (boto3 clients are)."""

    def __init__(self, *, dynamodb_client: Any, table_name: str, ttl_days: int = 30) -> None:
        self._ddb = dynamodb_client
        self._table = table_name
        self._ttl_seconds = ttl_days * 86_400

    def create(self, *, job_id: str, dedupe: str, input_bucket: str, input_key: str,
               attributes: Mapping[str, Any] | None = None) -> bool:
        """Write a new ACCEPTED record. False if the job already exists (a duplicate event)."""
        now = utc_now_iso()
        item = {
            **(attributes or {}),
            "job_id": job_id,
            "dedupe_key": dedupe,
            "state": str(JobState.ACCEPTED),
            "input_bucket": input_bucket,
            "input_key": input_key,
            "created_at": now,
            "updated_at": now,
            "accepted_at": now,
            "expires_at": int(time.time()) + self._ttl_seconds,
        }
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item={k: _to_dynamo(v) for k, v in item.items() if v is not None},
                ConditionExpression="attribute_not_exists(job_id)",
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def get(self, job_id: str) -> JobRecord | None:
        resp = self._ddb.get_item(TableName=self._table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
        item = resp.get("Item")
        return JobRecord.from_item(item) if item else None

    def transition(self, job_id: str, target: JobState, *, attributes: Mapping[str, Any] | None = None,
                   sources: frozenset[JobState] | None = None) -> bool:
        """Move `job_id` to `target` if it is in one of the allowed source states.

        Returns True if this call made the change, False if the record was in another state
        (someone else got there first, or the job is already terminal). Never overwrites a
        terminal state.
        """
        sources = allowed_sources(target) if sources is None else sources
        if not sources:
            raise ValueError(f"no state may move to {target}")
        now = utc_now_iso()
        values: dict[str, Any] = {
            **(attributes or {}),
            "state": str(target),
            "updated_at": now,
            f"{target.lower()}_at": now,
        }
        names = {f"#a{i}": name for i, name in enumerate(values)}
        expr_values = {f":a{i}": _to_dynamo(v) for i, v in enumerate(values.values())}
        set_clause = ", ".join(f"#a{i} = :a{i}" for i in range(len(values)))
        src_placeholders = []
        for i, src in enumerate(sorted(sources)):
            expr_values[f":s{i}"] = {"S": str(src)}
            src_placeholders.append(f":s{i}")
        names["#state"] = "state"
        update = f"SET {set_clause}"
        if target is JobState.RUNNING:
            update += " ADD attempts :one"
            expr_values[":one"] = {"N": "1"}
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"job_id": {"S": job_id}},
                UpdateExpression=update,
                ConditionExpression=f"attribute_exists(job_id) AND #state IN ({', '.join(src_placeholders)})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=expr_values,
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def update_attributes(self, job_id: str, attributes: Mapping[str, Any]) -> None:
        """Set non-state attributes (e.g. the Batch job id) without touching the state."""
        if not attributes:
            return
        names = {f"#a{i}": name for i, name in enumerate(attributes)}
        values = {f":a{i}": _to_dynamo(v) for i, v in enumerate(attributes.values())}
        self._ddb.update_item(
            TableName=self._table,
            Key={"job_id": {"S": job_id}},
            UpdateExpression="SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(attributes))),
            ConditionExpression="attribute_exists(job_id)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )


def table_definition(table_name: str) -> dict[str, Any]:
    """The key schema shared by the CDK stack and the local stack's create_table."""
    return {
        "TableName": table_name,
        "AttributeDefinitions": [{"AttributeName": "job_id", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "job_id", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    }


TTL_ATTRIBUTE = "expires_at"


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _to_dynamo(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float | Decimal):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, Mapping):
        return {"M": {str(k): _to_dynamo(v) for k, v in value.items() if v is not None}}
    if isinstance(value, list | tuple):
        return {"L": [_to_dynamo(v) for v in value]}
    raise TypeError(f"cannot store {type(value).__name__} in a job record")


def _from_dynamo(value: Mapping[str, Any]) -> Any:
    (kind, raw), = value.items()
    if kind == "S":
        return raw
    if kind == "N":
        number = Decimal(raw)
        return int(number) if number == number.to_integral_value() and "." not in raw else float(number)
    if kind == "BOOL":
        return bool(raw)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: _from_dynamo(v) for k, v in raw.items()}
    if kind == "L":
        return [_from_dynamo(v) for v in raw]
    raise TypeError(f"unsupported DynamoDB type {kind}")
