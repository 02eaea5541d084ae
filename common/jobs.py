"""The job record (DynamoDB): the single source of truth for a job's state.

This module stores and reads records; common.lifecycle decides which conditional writes move a job
and who speaks for it. Values go through boto3's own DynamoDB serializers, conditions through its
condition builder.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr, ConditionBase, ConditionExpressionBuilder
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from common.contract import JobOptions, JobState, utc_now_iso

TTL_ATTRIBUTE = "expires_at"
BATCH_GET_LIMIT = 100
# The HTTP API's jobs by their caller, newest first (sparse: only API jobs carry `caller`).
CALLER_INDEX = "by-caller"
CALLER_ATTRIBUTE = "caller"
CALLER_SORT_ATTRIBUTE = "created_at"
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


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


def upload_job_id(bucket: str, key: str, version_id: str | None, etag: str | None, size: int | None) -> str:
    """The job id of one uploaded object version (intake, its handler's logs and the tests agree on it)."""
    return job_id_for(dedupe_key(bucket, key, version_id, etag, size))


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
        plain = _plain_item(item)
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

    def number(self, name: str, default: float = 0.0) -> float:
        value = self.attributes.get(name)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


class JobStore:
    """Conditional reads and writes of job records. Thread-safe (boto3 clients are)."""

    def __init__(self, *, dynamodb_client: Any, table_name: str, ttl_days: int = 30) -> None:
        self._ddb = dynamodb_client
        self._table = table_name
        self._ttl_seconds = ttl_days * 86_400

    def create(self, *, job_id: str, dedupe: str, input_bucket: str, input_key: str,
               attributes: Mapping[str, Any] | None = None, state: JobState = JobState.ACCEPTED) -> bool:
        """Write a new record (ACCEPTED, or AWAITING_UPLOAD for the HTTP API). False if the job already exists."""
        now = utc_now_iso()
        item = {
            **(attributes or {}),
            "job_id": job_id,
            "dedupe_key": dedupe,
            "state": str(state),
            "input_bucket": input_bucket,
            "input_key": input_key,
            "created_at": now,
            "updated_at": now,
            f"{state.lower()}_at": now,
            TTL_ATTRIBUTE: int(time.time()) + self._ttl_seconds,
        }
        return self.put(item, Attr("job_id").not_exists())

    def put(self, item: Mapping[str, Any], condition: ConditionBase) -> bool:
        """A conditional PutItem; False when the condition does not hold."""
        kwargs = {"TableName": self._table, "Item": _item(item), **_condition_request(condition)}
        return _conditional(lambda: self._ddb.put_item(**kwargs))

    def get(self, job_id: str) -> JobRecord | None:
        """The record (strongly consistent), or None."""
        resp = self._ddb.get_item(TableName=self._table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
        item = resp.get("Item")
        return JobRecord.from_item(item) if item else None

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The items under `keys` that exist, as plain Python values: strongly consistent BatchGetItems of
        up to 100 keys each (DynamoDB's limit), asking again for any it left unprocessed."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            chunk = keys[start:start + BATCH_GET_LIMIT]
            wanted: dict[str, Any] = {self._table: {"Keys": [{"job_id": {"S": k}} for k in chunk],
                                                    "ConsistentRead": True}}
            while wanted:
                resp = self._ddb.batch_get_item(RequestItems=wanted)
                for item in resp.get("Responses", {}).get(self._table, []):
                    plain = _plain_item(item)
                    found[str(plain["job_id"])] = plain
                wanted = resp.get("UnprocessedKeys") or {}
        return found

    def update(self, key: str, values: Mapping[str, Any], *, condition: ConditionBase | None = None,
               add: Mapping[str, int] | None = None, remove: Sequence[str] = ()) -> bool:
        """SET `values` (None values are removed), ADD `add`, REMOVE `remove` on the item under `key` if
        `condition` holds (and the item exists). False when it does not."""
        kwargs = self._update_request(key, values, condition=condition, add=add, remove=remove)
        return _conditional(lambda: self._ddb.update_item(**kwargs))

    def update_record(self, key: str, values: Mapping[str, Any], *, condition: ConditionBase | None = None,
                      add: Mapping[str, int] | None = None, remove: Sequence[str] = ()) -> JobRecord | None:
        """As `update`, returning the record as written (one round trip), or None when the condition failed."""
        kwargs = self._update_request(key, values, condition=condition, add=add, remove=remove)
        written: list[JobRecord] = []

        def call() -> None:
            written.append(JobRecord.from_item(self._ddb.update_item(**kwargs, ReturnValues="ALL_NEW")["Attributes"]))

        return written[0] if _conditional(call) else None

    def _update_request(self, key: str, values: Mapping[str, Any], *, condition: ConditionBase | None,
                        add: Mapping[str, int] | None, remove: Sequence[str]) -> dict[str, Any]:
        condition = Attr("job_id").exists() & condition if condition is not None else Attr("job_id").exists()
        conditioned = _condition_request(condition)
        names: dict[str, str] = conditioned["ExpressionAttributeNames"]
        expr_values: dict[str, Any] = conditioned.get("ExpressionAttributeValues", {})
        sets, removes, adds = [], [], []
        for i, (name, value) in enumerate(values.items()):
            names[f"#s{i}"] = name
            if value is None:
                removes.append(f"#s{i}")
            else:
                expr_values[f":s{i}"] = _serializer.serialize(_storable(value))
                sets.append(f"#s{i} = :s{i}")
        for i, name in enumerate(remove):
            names[f"#r{i}"] = name
            removes.append(f"#r{i}")
        for i, (name, amount) in enumerate((add or {}).items()):
            names[f"#d{i}"] = name
            expr_values[f":d{i}"] = {"N": str(amount)}
            adds.append(f"#d{i} :d{i}")
        clauses = [f"{verb} {', '.join(parts)}" for verb, parts in (("SET", sets), ("REMOVE", removes),
                                                                    ("ADD", adds)) if parts]
        if not clauses:
            raise ValueError("an update needs something to set, add or remove")
        kwargs: dict[str, Any] = {"TableName": self._table, "Key": {"job_id": {"S": key}},
                                  "UpdateExpression": " ".join(clauses), **conditioned,
                                  "ExpressionAttributeNames": names}
        if expr_values:
            kwargs["ExpressionAttributeValues"] = expr_values
        return kwargs

    def by_caller(self, caller: str, *, limit: int, start: Mapping[str, Any] | None = None,
                  ) -> tuple[list[JobRecord], dict[str, Any] | None]:
        """One page of `caller`'s jobs, newest first, and the key to continue from (None: no more).

        The index is eventually consistent: a job created a moment ago may be missing from the page."""
        kwargs: dict[str, Any] = {
            "TableName": self._table, "IndexName": CALLER_INDEX, "Limit": limit, "ScanIndexForward": False,
            "KeyConditionExpression": "#c = :c", "ExpressionAttributeNames": {"#c": CALLER_ATTRIBUTE},
            "ExpressionAttributeValues": {":c": {"S": caller}},
        }
        if start:
            kwargs["ExclusiveStartKey"] = _item(start)
        resp = self._ddb.query(**kwargs)
        last = resp.get("LastEvaluatedKey")
        return [JobRecord.from_item(i) for i in resp.get("Items", [])], _plain_item(last) if last else None

    def query_below(self, index: str, partition: str, value: str, sort: str, below: float, *,
                    limit: int) -> list[str]:
        """Job ids in `index` whose `partition` is `value` and `sort` < `below`, oldest first (eventually
        consistent, as every GSI read: callers read each record again before acting on it)."""
        if limit <= 0:
            return []
        found: list[str] = []
        request: dict[str, Any] = {
            "TableName": self._table, "IndexName": index, "Limit": min(limit, 1000),
            "KeyConditionExpression": "#p = :p AND #s < :s",
            "ExpressionAttributeNames": {"#p": partition, "#s": sort},
            "ExpressionAttributeValues": {":p": {"S": value}, ":s": {"N": str(round(below, 3))}},
        }
        while len(found) < limit:
            resp = self._ddb.query(**request)
            found.extend(str(item["job_id"]["S"]) for item in resp.get("Items", []))
            if not resp.get("LastEvaluatedKey"):
                break
            request["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return found[:limit]

    def delete(self, key: str, condition: ConditionBase) -> bool:
        kwargs = {"TableName": self._table, "Key": {"job_id": {"S": key}}, **_condition_request(condition)}
        return _conditional(lambda: self._ddb.delete_item(**kwargs))

    def update_attributes(self, job_id: str, attributes: Mapping[str, Any]) -> None:
        """Set non-state attributes (e.g. intake's lease) without touching the state."""
        if attributes:
            self.update(job_id, attributes)


# The sweeper's sparse index: only open records (common.lifecycle) carry both attributes.
SWEEP_INDEX_KEYS = (("sweep_shard", "S", "HASH"), ("sweep_at", "N", "RANGE"))


def table_definition(table_name: str) -> dict[str, Any]:
    """The key schema and indexes shared by the CDK stack and the local stack's create_table."""
    definition: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": [{"AttributeName": "job_id", "AttributeType": "S"},
                                 *({"AttributeName": n, "AttributeType": t} for n, t, _ in SWEEP_INDEX_KEYS)],
        "KeySchema": [{"AttributeName": "job_id", "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [{
            "IndexName": "sweep", "KeySchema": [{"AttributeName": n, "KeyType": k} for n, _, k in SWEEP_INDEX_KEYS],
            "Projection": {"ProjectionType": "KEYS_ONLY"}}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    _add_index(definition, CALLER_INDEX, CALLER_ATTRIBUTE, CALLER_SORT_ATTRIBUTE)  # the HTTP API's GET /v1/jobs
    return definition


def _add_index(definition: dict[str, Any], name: str, partition: str, sort: str) -> None:
    """A global secondary index of every attribute (string keys) on the table definition."""
    known = {a["AttributeName"] for a in definition["AttributeDefinitions"]}
    definition["AttributeDefinitions"] += [{"AttributeName": a, "AttributeType": "S"}
                                           for a in (partition, sort) if a not in known]
    definition.setdefault("GlobalSecondaryIndexes", []).append({
        "IndexName": name,
        "KeySchema": [{"AttributeName": partition, "KeyType": "HASH"}, {"AttributeName": sort, "KeyType": "RANGE"}],
        "Projection": {"ProjectionType": "ALL"},
    })


def _condition_request(condition: ConditionBase) -> dict[str, Any]:
    """ConditionExpression with its names and (serialized) values, from boto3's condition builder."""
    built = ConditionExpressionBuilder().build_expression(condition)
    request: dict[str, Any] = {"ConditionExpression": built.condition_expression,
                               "ExpressionAttributeNames": dict(built.attribute_name_placeholders)}
    if built.attribute_value_placeholders:
        request["ExpressionAttributeValues"] = _item(built.attribute_value_placeholders)
    return request


def _conditional(call: Callable[[], object]) -> bool:
    try:
        call()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(_storable(v)) for k, v in values.items() if v is not None}


def _storable(value: Any) -> Any:
    """Python values as boto3's serializer wants them: Decimal for numbers, lists for tuples, no None in maps."""
    if isinstance(value, bool) or value is None or isinstance(value, str | Decimal):
        return value
    if isinstance(value, int | float):
        return Decimal(str(value))
    if isinstance(value, Mapping):
        return {str(k): _storable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    raise TypeError(f"cannot store {type(value).__name__} in a job record")


def _plain_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    """Decimals back to int or float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_plain(v) for v in value]
    return value
