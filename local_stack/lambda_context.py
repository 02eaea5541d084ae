"""The Lambda context object handlers receive (the attributes Powertools and handlers read)."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class LocalLambdaContext:
    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    region: str
    aws_request_id: str
    function_version: str = "$LATEST"
    deadline_ms: int = 0  # epoch milliseconds when the invocation times out (0: not started)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:000000000000:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/{self.aws_request_id}"

    def get_remaining_time_in_millis(self) -> int:
        if not self.deadline_ms:
            return self.timeout_seconds * 1000
        return max(0, self.deadline_ms - int(time.time() * 1000))
