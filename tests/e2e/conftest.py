"""Fixtures for the local stack tests: an emulator per module, receivers, helpers that wait."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from waiting import wait_until

from common.settings import Settings
from local_stack.emulator import MotoServer
from local_stack.event_source import MappingConfig
from local_stack.receiver import WebhookReceiver
from local_stack.webhooks import DeliveryPolicy


@pytest.fixture(scope="module")
def emulator_settings() -> Iterator[Settings]:
    """A fresh moto server (with the local stack's S3-event shim) and settings pointing at it."""
    added = [name for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if name not in os.environ]
    for name in added:
        os.environ[name] = "local"  # any credentials work against the emulator
    server = MotoServer()
    server.start()
    yield Settings(endpoint_url=server.endpoint_url, app_name=f"t{uuid.uuid4().hex[:8]}")
    server.stop()
    for name in added:
        os.environ.pop(name, None)


@pytest.fixture(scope="session")
def wait() -> Callable[..., object]:
    """`wait(condition, timeout=..., what=...)`: poll until truthy (test modules cannot import conftest)."""
    return wait_until


# Pipeline tests: webhook retries and the intake batching window short, so failures heal in seconds.
QUICK_DELIVERY = DeliveryPolicy(immediate_retries=1, backoff_retries=10, min_delay_seconds=0.25,
                                max_delay_seconds=1.0, timeout_seconds=5)
QUICK_MAPPING = MappingConfig(batch_size=10, batching_window_seconds=0.2, pollers=2)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver for the module's stack."""
    r = WebhookReceiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def quick() -> dict[str, object]:
    """LocalStackConfig arguments of the pipeline tests (test modules cannot import conftest)."""
    return {"delivery_policy": QUICK_DELIVERY, "mapping": QUICK_MAPPING}
