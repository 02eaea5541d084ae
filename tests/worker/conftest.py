"""The flow on moto (tests/support/pipeline_world.py) with a fake engine; helpers for worker tests."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from fake_engine import FakeEngine, image_bytes
from moto import mock_aws
from pipeline_world import PipelineWorld, make_pipeline_world


@pytest.fixture
def world(aws_creds: None) -> Iterator[PipelineWorld]:
    with mock_aws():
        yield make_pipeline_world()


@pytest.fixture
def kit() -> SimpleNamespace:
    """Helpers for tests (conftest modules are not importable under --import-mode=importlib)."""
    return SimpleNamespace(image=image_bytes, FakeEngine=FakeEngine)
