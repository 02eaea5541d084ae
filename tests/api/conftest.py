"""Fixtures of the HTTP API tests: a moto world per test (tests/support/api_world.py) and small images."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from api_world import ApiWorld, make_api_world
from moto import mock_aws


@pytest.fixture
def world(aws_creds: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiWorld]:
    with mock_aws():
        yield make_api_world(monkeypatch)


@pytest.fixture
def png() -> Callable[..., bytes]:
    def make(width: int = 32, height: int = 24) -> bytes:
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.linear_gradient("L").resize((width, height)).convert("RGB").save(buf, "PNG")
        return buf.getvalue()

    return make
