"""A Lambda context for handler tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class FakeLambdaContext:
    function_name: str = "upscaler-notifier"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:upscaler-notifier"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()
