"""The flow on moto (tests/support/pipeline_world.py) with a fake engine; helpers for worker tests."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from fake_engine import FakeEngine, image_bytes
from moto import mock_aws
from pipeline_world import PipelineWorld, make_pipeline_world

from common import aws


@pytest.fixture
def aws_creds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    aws.clear_cache()
    yield
    aws.clear_cache()


@pytest.fixture
def world(aws_creds: None) -> Iterator[PipelineWorld]:
    with mock_aws():
        yield make_pipeline_world()


@pytest.fixture
def kit() -> SimpleNamespace:
    """Helpers for tests (conftest modules are not importable under --import-mode=importlib)."""
    return SimpleNamespace(image=image_bytes, FakeEngine=FakeEngine)
