"""The deployment's typed configuration, read from CDK context (cdk.json, then `-c key=value`).

Every key is `upscaler:<name>`. Names are either infrastructure choices (fields of `InfraConfig`) or
fields of `common.settings.Settings` (limits, prefixes, model defaults...), so the one Settings object
that the Lambdas and the worker read is built from the same place. Values given with `-c` arrive as
strings and are parsed to the declared type; anything invalid fails synth with a message that names the key.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from common.contract import ATTR_EVENT_TYPE, ATTR_SCHEMA_VERSION, ATTR_UPLOAD_PREFIX, EventType
from common.presign import TASK_ROLE_CREDENTIAL_SECONDS
from common.settings import ENV_PREFIX, Settings, SettingsError

CONTEXT_PREFIX = "upscaler:"
REPO_ROOT = Path(__file__).resolve().parent.parent

# Settings the stack itself decides (generated resource names, the real backend): not configurable.
STACK_OWNED_SETTINGS = frozenset({
    "region", "endpoint_url", "input_bucket", "output_bucket", "jobs_table", "topic_arn",
    "job_backend", "local_batch_url", "job_queue", "job_definition", "work_queue_url",
    "intake_queue_url", "intake_dlq_url",
    "webhook_secret_arn", "webhook_dlq_url", "webhook_blocked_cidrs", "webhook_allow_local",
})

# CUDA-capable x86_64 GPU families the ECS AL2023 NVIDIA AMI runs (g4ad is AMD, g5g is Graviton: the worker
# image cannot run there).
_GPU_INSTANCE_TYPE = re.compile(r"^(g4dn|g5|g6|g6e|gr6|p4d|p4de|p5|p5e|p5en)(\.(\d*x?large|metal))?$")
# (vCPUs, GPUs) of the sizes of those families (Amazon EC2 accelerated computing instance specifications): a
# worker takes one GPU, so an 8-vCPU, 1-GPU instance holds one worker though the environment counts 8 vCPUs.
_GPU_SHAPES: Mapping[str, Mapping[str, tuple[int, int]]] = {
    **{family: {"xlarge": (4, 1), "2xlarge": (8, 1), "4xlarge": (16, 1), "8xlarge": (32, 1), "16xlarge": (64, 1),
                "12xlarge": (48, 4), "24xlarge": (96, 4), "48xlarge": (192, 8)} for family in ("g5", "g6", "g6e")},
    "g4dn": {"xlarge": (4, 1), "2xlarge": (8, 1), "4xlarge": (16, 1), "8xlarge": (32, 1), "16xlarge": (64, 1),
             "12xlarge": (48, 4), "metal": (96, 8)},
    "gr6": {"4xlarge": (16, 1), "8xlarge": (32, 1)},
    **{family: {"24xlarge": (96, 8)} for family in ("p4d", "p4de")},
    **{family: {"48xlarge": (192, 8)} for family in ("p5", "p5e", "p5en")},
}
# V100 (Volta) families: the AL2023 NVIDIA AMI's driver (open kernel modules) does not support them.
_UNSUPPORTED_GPU_FAMILIES = ("p3", "p3dn")
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                       2557, 2922, 3288, 3653)
_FILTER_ATTRIBUTES = (ATTR_EVENT_TYPE, ATTR_UPLOAD_PREFIX, ATTR_SCHEMA_VERSION)
# Powertools for AWS Lambda (Python): the public layer version the Lambdas run; the dev environment's
# aws-lambda-powertools is the same release (tests/infra check both agree).
POWERTOOLS_VERSION = "3.37.0"


class ConfigError(ValueError):
    """The deployment configuration is invalid; the message says which key and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    """One HTTPS subscriber of the notification topic."""

    url: str
    # SNS filter policy on message attributes, e.g. {"event_type": ["upscale.succeeded"]}. None: everything.
    filter_policy: Mapping[str, list[Any]] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InfraConfig:
    stack_name: str = "Upscaler"

    # --- GPU compute (AWS Batch) ---
    instance_types: tuple[str, ...] = ("g5.xlarge", "g5.2xlarge", "g4dn.xlarge", "g4dn.2xlarge")
    max_vcpus: int = 16  # the main (spot) environment: 2 workers on 2xlarge types, up to 4 on xlarge ones
    use_spot: bool = True
    on_demand_max_vcpus: int = 0  # > 0 adds an on-demand environment behind the spot one in the same queue
    worker_vcpus: int = 4
    root_volume_gib: int = 100  # the GPU image (CUDA + ONNX Runtime + models) is several GB
    # A job stuck RUNNABLE for want of (spot) capacity is cancelled after this long, so its uploader hears
    # upscale.failed instead of nothing. Misconfigurations that can never place a job cancel after 10 min.
    capacity_wait_minutes: int = 120

    # --- network ---
    vpc_id: str | None = None  # bring your own VPC (needs a concrete account/region for the lookup)
    egress: str = "endpoints"  # "endpoints": isolated subnets + VPC endpoints; "nat": one NAT gateway
    max_azs: int = 2
    # Route 53 Resolver DNS Firewall on the stack's VPC: AWS names only (infra/constructs/network.py).
    dns_firewall: bool = True

    # --- intake (S3 -> SQS -> Lambda) ---
    intake_batch_size: int = 10
    intake_batch_window_seconds: int = 5
    # The throttle: the SQS event source's maximum concurrency (2..1000), which needs no account headroom.
    intake_max_concurrency: int = 5
    # None (default): no reservation. Reserving needs headroom a new account lacks (see docs/deploy.md).
    intake_reserved_concurrency: int | None = None
    intake_max_receive_count: int = 5
    intake_timeout_seconds: int = 60
    intake_memory_mib: int = 1024
    notifier_memory_mib: int = 256

    # --- HTTP API (functions/api) and its try-it page ---
    # SigV4 (IAM) on every route, unless an OIDC issuer is named: then its JWTs on every route instead.
    api_jwt_issuer: str | None = None  # e.g. https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEf123
    api_jwt_audience: tuple[str, ...] = ()  # the client ids tokens are issued to (a Cognito app client id)
    api_rate_limit: int = 20  # requests per second on each route (the stage's default route settings)
    api_burst_limit: int = 40
    api_create_rate_limit: int = 5  # POST /v1/jobs: each one signs an upload link and writes a record
    api_create_burst_limit: int = 10
    api_memory_mib: int = 512
    api_web: bool = True  # the try-it page (web/) on CloudFront, calling the API with the user's credentials

    # --- notifications, data lifetime, observability ---
    webhooks: tuple[Webhook, ...] = ()
    alarm_email: str | None = None
    retain_data: bool = True  # buckets and the jobs table survive `cdk destroy`
    upload_expiry_days: int = 30  # inputs under the upload prefix
    rejected_expiry_days: int = 7
    output_expiry_days: int = 30  # 0: keep outputs forever
    log_retention_days: int = 30
    # Powertools' public layer version (never "latest": what the Lambdas run must not change under them).
    powertools_version: str = POWERTOOLS_VERSION

    settings: Settings = field(default_factory=Settings)

    @property
    def on_demand_environment(self) -> bool:
        return self.use_spot and self.on_demand_max_vcpus > 0

    @property
    def intake_visibility_timeout_seconds(self) -> int:
        """AWS guidance for Lambda consumers of SQS: 6x the function timeout plus the batching window."""
        return 6 * self.intake_timeout_seconds + self.intake_batch_window_seconds

    @property
    def max_workers(self) -> int:
        """`max_workers` as set, else as many workers as the compute environments surely hold at once, whichever
        allowed instance types Batch picks (each worker needs one GPU and `worker_vcpus`)."""
        if self.settings.max_workers:
            return self.settings.max_workers
        on_demand = self.on_demand_max_vcpus if self.on_demand_environment else 0
        return worker_capacity(self.max_vcpus + on_demand, self.worker_vcpus, self.instance_types)


def worker_capacity(max_vcpus: int, worker_vcpus: int, instance_types: tuple[str, ...]) -> int:
    """Workers `max_vcpus` of the allowed types surely hold: by the type that spends the most vCPUs per worker."""
    def vcpus_per_worker(shape: tuple[int, int]) -> float:
        vcpus, gpus = shape
        return vcpus / max(1, min(gpus, vcpus // max(1, worker_vcpus)))

    worst = max(vcpus_per_worker(shape) for name in instance_types for shape in _shapes(name))
    return max(1, int(max_vcpus // worst))


def _shapes(instance_type: str) -> list[tuple[int, int]]:
    """The (vCPUs, GPUs) an allowed type can be: one size, or every size of a family named alone."""
    family, _, size = instance_type.partition(".")
    sizes = _GPU_SHAPES[family]
    return [sizes[size]] if size else list(sizes.values())


_INFRA_FIELDS = {f.name: f for f in fields(InfraConfig) if f.name != "settings"}
_INFRA_TYPES = get_type_hints(InfraConfig)
_SETTINGS_FIELDS = {f.name for f in fields(Settings)} - STACK_OWNED_SETTINGS
_SETTINGS_TYPES = get_type_hints(Settings)
_EXPECTED: dict[Any, str] = {int: "an integer", float: "a number", bool: "true or false",
                             int | None: "an integer or null", float | None: "a number or null"}


def config_from_context(context: Mapping[str, Any]) -> InfraConfig:
    """Build and validate the config from a CDK context mapping (only `upscaler:*` keys are read)."""
    infra: dict[str, Any] = {}
    settings_env: dict[str, str] = {}
    for full_key, raw in context.items():
        if not full_key.startswith(CONTEXT_PREFIX):
            continue
        name = full_key[len(CONTEXT_PREFIX):]
        if name in _INFRA_FIELDS:
            infra[name] = _coerce(full_key, raw, _INFRA_TYPES[name])
        elif name in _SETTINGS_FIELDS:
            settings_env[ENV_PREFIX + name.upper()] = _as_env_value(raw)
        else:
            raise ConfigError(_unknown_key_message(full_key, name))
    for env_name, value in settings_env.items():  # typed values one at a time, so the message names the key
        name = env_name[len(ENV_PREFIX):].lower()
        if _SETTINGS_TYPES[name] not in _EXPECTED:
            continue
        try:
            Settings.from_env({env_name: value})
        except SettingsError as exc:
            if isinstance(exc.__cause__, ValueError):  # the value did not parse (a rule it breaks is said below)
                expected = _EXPECTED[_SETTINGS_TYPES[name]]
                raise ConfigError(f"{CONTEXT_PREFIX}{name}={value!r}: expected {expected}") from exc
    try:
        settings = Settings.from_env(settings_env)
    except SettingsError as exc:
        raise ConfigError(f"invalid setting in context ({CONTEXT_PREFIX}<field>): {exc}") from exc
    config = InfraConfig(**infra, settings=settings)
    _validate(config)
    return config


def load_cdk_json_context(path: Path = REPO_ROOT / "cdk.json") -> dict[str, Any]:
    """The `context` block of cdk.json, as the CDK CLI hands it to the app."""
    return dict(json.loads(path.read_text())["context"])


def _unknown_key_message(full_key: str, name: str) -> str:
    if name in STACK_OWNED_SETTINGS:
        return f"{full_key}: '{name}' is decided by the stack (generated names, real AWS) and cannot be set"
    known = sorted({*_INFRA_FIELDS, *_SETTINGS_FIELDS})
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {CONTEXT_PREFIX}{close[0]}?" if close else ""
    return f"unknown context key {full_key}{hint}"


def _as_env_value(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return "" if raw is None else str(raw)


def _coerce(key: str, raw: Any, hint: Any) -> Any:
    """Parse a context value to the field's declared type (CLI `-c` values always arrive as strings)."""
    text = str(hint)
    try:
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
            if "None" in text:
                return None
            raise ValueError("a value is required")
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "1", "yes"):
                return True
            if str(raw).lower() in ("false", "0", "no"):
                return False
            raise ValueError("expected true or false")
        if hint is int or text == "int | None":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError("expected an integer")
            try:
                return int(raw)
            except ValueError:
                raise ValueError("expected an integer") from None
        if "Webhook" in text:
            return tuple(_webhook(item) for item in _json_list(raw))
        if text.startswith("tuple"):
            items = raw.split(",") if isinstance(raw, str) and not raw.lstrip().startswith("[") else _json_list(raw)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if isinstance(raw, str):
            return raw
        raise ValueError(f"expected a string, got {type(raw).__name__}")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}={raw!r}: {exc}") from exc


def _json_list(raw: Any) -> list[Any]:
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        raise ValueError("expected a JSON list") from None
    if not isinstance(value, list):
        raise ValueError("expected a list")
    return value


def _webhook(item: Any) -> Webhook:
    if isinstance(item, str):
        item = {"url": item}
    if not isinstance(item, Mapping) or set(item) - {"url", "filter_policy"} or "url" not in item:
        raise ValueError('each webhook is a URL or {"url": ..., "filter_policy": {...}}')
    policy = item.get("filter_policy")
    if policy is not None and not isinstance(policy, Mapping):
        raise ValueError(f"filter_policy of {item['url']} must be an object")
    return Webhook(url=str(item["url"]), filter_policy=dict(policy) if policy else None)


def _validate(config: InfraConfig) -> None:
    def fail(name: str, why: str) -> None:
        raise ConfigError(f"{CONTEXT_PREFIX}{name}={getattr(config, name)!r}: {why}")

    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,127}", config.stack_name):
        fail("stack_name", "must start with a letter and hold only letters, digits and '-'")
    if not config.instance_types:
        fail("instance_types", "needs at least one GPU instance type")
    for instance_type in config.instance_types:
        if instance_type.partition(".")[0] in _UNSUPPORTED_GPU_FAMILIES:
            fail("instance_types", f"{instance_type!r}: the ECS AL2023 NVIDIA AMI cannot run p3/p3dn (V100); "
                                   "use g4dn, g5, g6 or p4d and newer")
        if not _GPU_INSTANCE_TYPE.match(instance_type):
            fail("instance_types", f"{instance_type!r} is not an NVIDIA GPU x86_64 type (g4dn, g5, g6, p4d...)")
        family, _, size = instance_type.partition(".")
        if size and size not in _GPU_SHAPES[family]:
            fail("instance_types", f"{instance_type!r}: {family} has no size {size!r} "
                                   f"(sizes: {', '.join(sorted(_GPU_SHAPES[family]))})")
    if config.worker_vcpus < 1:
        fail("worker_vcpus", "must be at least 1")
    if config.max_vcpus < config.worker_vcpus:
        fail("max_vcpus", f"must hold at least one job ({config.worker_vcpus} vCPUs)")
    if config.on_demand_max_vcpus < 0:
        fail("on_demand_max_vcpus", "must be 0 (no on-demand environment) or more")
    if config.on_demand_max_vcpus and not config.use_spot:
        fail("on_demand_max_vcpus", "only adds on-demand capacity behind spot; with use_spot=false set it to 0")
    if 0 < config.on_demand_max_vcpus < config.worker_vcpus:
        fail("on_demand_max_vcpus", f"must hold at least one job ({config.worker_vcpus} vCPUs) or be 0")
    if not 10 <= config.capacity_wait_minutes <= 1440:
        fail("capacity_wait_minutes", "must be within 10..1440 (AWS Batch job state time limit)")
    if config.root_volume_gib < 30:
        fail("root_volume_gib", "must be at least 30 (the ECS GPU AMI's own size)")
    if config.vpc_id is not None and not re.fullmatch(r"vpc-[0-9a-f]{8,17}", config.vpc_id):
        fail("vpc_id", "must look like vpc-0123456789abcdef0")
    if config.egress not in ("endpoints", "nat"):
        fail("egress", "must be 'endpoints' or 'nat'")
    if not 1 <= config.max_azs <= 6:
        fail("max_azs", "must be within 1..6")
    if not 1 <= config.intake_batch_size <= 10_000:
        fail("intake_batch_size", "must be within 1..10000 (SQS event source limit)")
    if not 0 <= config.intake_batch_window_seconds <= 300:
        fail("intake_batch_window_seconds", "must be within 0..300")
    if config.intake_batch_size > 10 and config.intake_batch_window_seconds < 1:
        fail("intake_batch_window_seconds", "must be at least 1 when intake_batch_size > 10 (SQS rule)")
    if not 2 <= config.intake_max_concurrency <= 1000:
        fail("intake_max_concurrency", "must be within 2..1000 (SQS event source maximum concurrency)")
    reserved = config.intake_reserved_concurrency
    if reserved is not None and reserved < config.intake_max_concurrency:
        # Fewer reserved than the poller may run: Lambda throttles it, and throttled receives count
        # towards maxReceiveCount, pushing healthy uploads to the DLQ (0 would throttle every upload).
        fail("intake_reserved_concurrency", f"must be null (no reservation) or at least intake_max_concurrency "
                                            f"({config.intake_max_concurrency}); fewer throttles the SQS poller")
    if not 1 <= config.intake_max_receive_count <= 1000:
        fail("intake_max_receive_count", "must be within 1..1000")
    if not 3 <= config.intake_timeout_seconds <= 900:
        fail("intake_timeout_seconds", "must be within 3..900")
    for name in ("intake_memory_mib", "notifier_memory_mib"):
        if not 128 <= getattr(config, name) <= 10_240:
            fail(name, "must be within 128..10240")
    if config.log_retention_days not in LOG_RETENTION_DAYS:
        fail("log_retention_days", f"must be one of CloudWatch's values {LOG_RETENTION_DAYS}")
    for name in ("upload_expiry_days", "rejected_expiry_days"):
        if getattr(config, name) < 1:
            fail(name, "must be at least 1")
    if config.output_expiry_days < 0:
        fail("output_expiry_days", "must be 0 (keep forever) or more")
    if config.alarm_email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", config.alarm_email):
        fail("alarm_email", "is not an e-mail address")
    if not re.fullmatch(r"\d+\.\d+\.\d+", config.powertools_version):
        fail("powertools_version", "must be a released version such as 3.37.0 (a pinned layer, never 'latest')")
    if config.settings.presigned_url_expiry_seconds > TASK_ROLE_CREDENTIAL_SECONDS:
        bound = TASK_ROLE_CREDENTIAL_SECONDS
        raise ConfigError(
            f"{CONTEXT_PREFIX}presigned_url_expiry_seconds={config.settings.presigned_url_expiry_seconds}: at most "
            f"{bound} ({bound // 3600} h) on AWS: the worker signs with its job role's temporary credentials and a "
            "link dies with them (each notification states the real expiry)")
    if config.settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"):
        raise ConfigError(f"{CONTEXT_PREFIX}log_level={config.settings.log_level!r}: use DEBUG, INFO, WARNING or ERROR")
    if config.settings.worker_memory_mib < 1024:
        raise ConfigError(f"{CONTEXT_PREFIX}worker_memory_mib must be at least 1024")
    if config.settings.max_attempts not in range(1, 101):
        raise ConfigError(f"{CONTEXT_PREFIX}max_attempts must be within 1..100")
    if config.settings.max_receives not in range(1, 1001):
        raise ConfigError(f"{CONTEXT_PREFIX}max_receives must be within 1..1000 (SQS maxReceiveCount)")
    if config.settings.worker_idle_seconds < 20:
        raise ConfigError(f"{CONTEXT_PREFIX}worker_idle_seconds must be at least 20 (one long poll of the queue)")
    if config.settings.worker_max_seconds < config.settings.worker_idle_seconds:
        raise ConfigError(f"{CONTEXT_PREFIX}worker_max_seconds must be at least worker_idle_seconds")
    _validate_webhooks(config.webhooks)
    _validate_api(config, fail)


def _validate_api(config: InfraConfig, fail: Callable[[str, str], None]) -> None:
    if config.api_jwt_issuer is not None and not re.fullmatch(r"https://[^\s/]+(/\S*)?", config.api_jwt_issuer):
        fail("api_jwt_issuer", "must be the issuer's https URL (the JWT's `iss`)")
    if bool(config.api_jwt_issuer) != bool(config.api_jwt_audience):
        fail("api_jwt_audience", "the JWT authorizer needs both api_jwt_issuer and api_jwt_audience (or neither)")
    for name in ("api_rate_limit", "api_burst_limit", "api_create_rate_limit", "api_create_burst_limit"):
        if not 1 <= getattr(config, name) <= 10_000:
            fail(name, "must be within 1..10000 (API Gateway's account default is 10000 requests per second)")
    if not 128 <= config.api_memory_mib <= 10_240:
        fail("api_memory_mib", "must be within 128..10240")


def _validate_webhooks(webhooks: tuple[Webhook, ...]) -> None:
    event_types = {str(e) for e in EventType}
    seen: set[str] = set()
    for hook in webhooks:
        where = f"{CONTEXT_PREFIX}webhooks[{hook.url!r}]"
        if not re.fullmatch(r"https://[^\s/]+(/\S*)?", hook.url):
            raise ConfigError(f"{where}: webhooks must be https:// URLs (SNS signs, TLS protects the payload)")
        if hook.url in seen:
            raise ConfigError(f"{where}: subscribed twice")
        seen.add(hook.url)
        for attribute, values in (hook.filter_policy or {}).items():
            if attribute not in _FILTER_ATTRIBUTES:
                raise ConfigError(f"{where}: filter on unknown message attribute {attribute!r}; "
                                  f"published attributes are {', '.join(_FILTER_ATTRIBUTES)}")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: filter_policy.{attribute} must be a non-empty list")
            if attribute == ATTR_EVENT_TYPE:
                unknown = [v for v in values if isinstance(v, str) and v not in event_types]
                if unknown:
                    raise ConfigError(f"{where}: unknown event types {unknown}; known: {sorted(event_types)}")

