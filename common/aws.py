"""Every boto3 client is built here, so the same code runs against AWS and the local emulator."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from common.clock import SERVER_CLOCK
from common.settings import Settings

_lock = threading.Lock()
_cache: dict[tuple[str, str | None, str], Any] = {}

# Standard retry mode: exponential backoff with jitter on throttling and 5xx, as AWS recommends.
_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60)
# SNS: one Publish (with botocore's own retry) must end well inside the outbox lease (common.lifecycle), so a
# publisher never outlives the lease it holds: 2 tries (`max_attempts` counts retries) x (connect + read timeout)
# plus a backoff.
PUBLISH_CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=3, read_timeout=10)


def client(service: str, settings: Settings) -> Any:
    """A cached, thread-safe boto3 client for `service` in the settings' region and endpoint."""
    key = (service, settings.endpoint_url, settings.region)
    with _lock:
        found = _cache.get(key)
        if found is None:
            cfg = PUBLISH_CONFIG if service == "sns" else _CONFIG
            if service == "s3":
                # Path-style addressing keeps presigned URLs valid against the emulator's host.
                style = "path" if settings.endpoint_url else "virtual"
                cfg = cfg.merge(Config(signature_version="s3v4", s3={"addressing_style": style}))
            found = boto3.session.Session().client(
                service, region_name=settings.region, endpoint_url=settings.endpoint_url, config=cfg
            )
            found.meta.events.register("after-call", _observe_server_time)
            _cache[key] = found
        return found


def _observe_server_time(http_response: Any = None, **_kwargs: Any) -> None:
    """Every answer's Date header corrects the process's lease clock (common.clock)."""
    if http_response is not None:
        SERVER_CLOCK.observe_date(http_response.headers.get("Date"))


def clear_cache() -> None:
    """Forget cached clients (tests that switch endpoints call this)."""
    with _lock:
        _cache.clear()
