"""One typed settings object for every part of the service, read from the environment.

The CDK stack sets these variables on the Lambdas and the Batch job definition; the local stack
sets the same ones. Every variable is `UPSCALER_<FIELD NAME IN UPPER CASE>`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from common.formats import MAX_SCALE, MIN_SCALE, scale_in_range
from common.presign import TASK_ROLE_CREDENTIAL_SECONDS
from common.work_queue import WORK_RETENTION_SECONDS

ENV_PREFIX = "UPSCALER_"
METRICS_NAMESPACE = "Upscaler"  # CloudWatch namespace of the Lambdas' EMF metrics (and the alarms on them)
MIN_HEARTBEAT_SECONDS = 1  # a worker renews its lease every third of work_visibility_seconds


class SettingsError(ValueError):
    """A setting is missing or has a value of the wrong type."""


@dataclass(frozen=True, slots=True)
class Settings:
    # --- names (the same config names the resources in the cloud and locally) ---
    app_name: str = "upscaler"
    region: str = "us-east-1"
    endpoint_url: str | None = None  # local emulator; None means real AWS
    input_bucket: str = "upscaler-input"
    output_bucket: str = "upscaler-output"
    jobs_table: str = "upscaler-jobs"
    topic_arn: str = ""
    work_queue_url: str = ""  # the SQS work queue: one item per accepted upload
    intake_queue_url: str = ""  # S3 events -> intake (the sweeper re-drives uploads whose intake never finished)
    intake_dlq_url: str = ""
    job_queue: str = "upscaler-gpu"  # the Batch job queue that worker jobs run in
    job_definition: str = "upscaler-worker"
    # "batch": worker jobs go to AWS Batch. "local": to the local stack's Batch stand-in (local_stack.batch_api).
    job_backend: str = "batch"
    local_batch_url: str = ""

    # --- prefixes ---
    upload_prefix: str = "uploads/"
    rejected_prefix: str = "rejected/"
    output_prefix: str = "outputs/"

    # --- intake limits ---
    max_upload_bytes: int = 50 * 1024 * 1024
    max_input_pixels: int = 16_777_216  # 16.7 MP, e.g. 4096 x 4096
    max_input_side: int = 16_384
    min_input_side: int = 8
    max_output_pixels: int = 268_435_456  # 256 MP: a 16 MP photo at 4x
    header_read_bytes: int = 65_536  # ranged GET used to read dimensions before any decode
    decode_memory_limit_bytes: int = 512 * 1024 * 1024
    accept_animated_first_frame: bool = False

    # --- model defaults ---
    default_model: str = "x4plus"
    default_scale: float = 4.0
    default_output_format: str | None = None  # None: follow the input format
    jpeg_quality: int = 95
    webp_quality: int = 95
    tile_size: int = 0  # 0: chosen from available memory
    tile_pad: int = 24
    model_dir: str = ""  # ONNX model cache; "" = $XDG_CACHE_HOME/upscaler/models (the image bakes /opt/models)

    # --- work queue and workers (the CDK stack and the local stack both use these) ---
    max_attempts: int = 3  # attempts that die with the image (or fail transiently) before it ends FAILED
    # SQS receives before the work DLQ: only a backstop (receives also count give-backs and duplicates); the
    # notifier sends an item it finds there back unless its job is done (common.lifecycle counts real attempts).
    max_receives: int = 20
    work_visibility_seconds: int = 120  # a claim's lease; the worker renews it while it works on an image
    job_deadline_seconds: int = 86_400  # a job not finished this long after it was queued ends FAILED (TIMED_OUT)
    # An ACCEPTED record this old was left by an intake whose own retries are over: the sweeper re-drives it.
    stale_accepted_seconds: int = 3_600
    prefetch_images: int = 1  # images a worker holds decoded ahead of the GPU (claimed, downloaded, decoded)
    encode_workers: int = 0  # threads that encode and upload beside the GPU; 0: the host's vCPUs less one (>= 1)
    worker_idle_seconds: int = 60  # a worker with nothing to do for this long exits (scale to zero)
    worker_max_seconds: int = 3600  # a worker takes no new item after this long (finishes the one in hand)
    max_item_seconds: int = 1800  # a worker stops renewing an image's lease after this long (it is hung)
    max_workers: int = 0  # worker jobs running or waiting for a GPU at once; 0: what the compute environment holds
    worker_start_grace_seconds: int = 900  # a submitted worker may wait this long for a GPU before its slot is reused
    worker_memory_mib: int = 15_000

    # --- notifications and records ---
    # 6 h: the longest a link signed with the Batch job role's temporary credentials can live (common.presign).
    presigned_url_expiry_seconds: int = TASK_ROLE_CREDENTIAL_SECONDS
    job_record_ttl_days: int = 30

    # --- per-request webhooks (functions/webhooks; docs/webhooks.md). The stack sets all four. ---
    webhook_secret_arn: str = ""  # Secrets Manager: the signing secret(s), `whsec_...`, space-separated
    webhook_dlq_url: str = ""  # where deliveries that failed for good go
    webhook_blocked_cidrs: str = ""  # comma-separated; refused besides the fixed list (this VPC's CIDR)
    # The local stack only: http:// and 127.0.0.1 receivers. Refused without an emulator endpoint_url.
    webhook_allow_local: bool = False

    # --- observability ---
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `UPSCALER_*` variables, then keyword overrides."""
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, raw, hints[f.name])
        if "region" not in values:
            region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
            if region:
                values["region"] = region
        values.update(overrides)
        settings = cls(**values)
        settings.check()
        return settings

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings (for Lambda, Batch and child processes)."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            env[ENV_PREFIX + f.name.upper()] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return env

    @property
    def heartbeat_seconds(self) -> float:
        """How often a worker renews its item's visibility and its claim: three chances per lease."""
        return self.work_visibility_seconds / 3

    @property
    def worker_timeout_seconds(self) -> int:
        """The Batch job timeout: the longest a worker takes items, plus the longest an image taken just before
        may legitimately run (max_item_seconds), its lease, and a margin to finish and exit."""
        return self.worker_max_seconds + self.max_item_seconds + self.work_visibility_seconds + 300

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def check(self) -> None:
        for name in ("upload_prefix", "rejected_prefix", "output_prefix"):
            prefix = getattr(self, name)
            if not prefix.endswith("/") or prefix.startswith("/"):
                raise SettingsError(f"{name} must end with '/' and not start with one, got {prefix!r}")
        if len({self.upload_prefix, self.rejected_prefix, self.output_prefix}) != 3:
            raise SettingsError("upload, rejected and output prefixes must differ")
        if self.job_backend not in ("batch", "local"):
            raise SettingsError(f"job_backend must be 'batch' or 'local', got {self.job_backend!r}")
        if not scale_in_range(self.default_scale):
            raise SettingsError(f"default_scale must be within {MIN_SCALE:g}..{MAX_SCALE:g}, got {self.default_scale}")
        for name in ("max_upload_bytes", "max_input_pixels", "max_input_side", "max_output_pixels",
                     "header_read_bytes", "presigned_url_expiry_seconds", "max_attempts",
                     "worker_idle_seconds", "worker_max_seconds", "worker_start_grace_seconds", "max_item_seconds",
                     "job_deadline_seconds", "stale_accepted_seconds", "prefetch_images"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.max_workers < 0 or self.encode_workers < 0:
            raise SettingsError("max_workers and encode_workers must be 0 (derived) or positive")
        if self.max_receives < self.max_attempts + 2:
            raise SettingsError("max_receives (the work DLQ backstop) must exceed max_attempts by at least 2")
        if self.job_deadline_seconds >= WORK_RETENTION_SECONDS:
            raise SettingsError("job_deadline_seconds must be shorter than the work queue's retention (14 days)")
        if self.work_visibility_seconds < 3 * MIN_HEARTBEAT_SECONDS:
            raise SettingsError(f"work_visibility_seconds must be at least {3 * MIN_HEARTBEAT_SECONDS}")
        if self.webhook_allow_local and not self.endpoint_url:
            raise SettingsError("webhook_allow_local is for the local stack only (it needs endpoint_url)")
        if self.presigned_url_expiry_seconds > 604_800:
            raise SettingsError("presigned_url_expiry_seconds cannot exceed 7 days (SigV4 limit)")


def env_var(name: str) -> str:
    """The environment variable of the setting `name` (KeyError for a name Settings does not have)."""
    if name not in {f.name for f in fields(Settings)}:
        raise KeyError(f"Settings has no field {name!r}")
    return ENV_PREFIX + name.upper()


def _parse(name: str, raw: str, hint: Any) -> Any:
    text = str(hint)
    try:
        if hint is bool or text == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if "None" in text and raw == "":
            return None
        return raw
    except ValueError as exc:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {text}") from exc
