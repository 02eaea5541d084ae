"""Shared by every test folder: moto with DynamoDB's atomic conditional writes, and fake AWS credentials."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common import aws
from local_stack.moto_server import make_dynamodb_writes_atomic

make_dynamodb_writes_atomic()


@pytest.fixture
def aws_creds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Credentials and a region for in-process moto; no client built for another test is reused."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    aws.clear_cache()
    yield
    aws.clear_cache()
