"""Handlers run in their own processes with the function's environment, like Lambda execution environments."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_stack.lambda_runtime import LambdaInvocationError, LambdaRuntime

HANDLER = '''
import os
import time
print("init, on stdout")  # must not corrupt the runtime's protocol
def handler(event, context):
    if event.get("crash"):
        os._exit(3)
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("raise"):
        raise ValueError("bad record")
    print("handling", event)
    return {"table": os.environ.get("UPSCALER_JOBS_TABLE"), "function": context.function_name,
            "arn": context.invoked_function_arn, "request": context.aws_request_id, "pid": os.getpid(),
            "remaining_ms": context.get_remaining_time_in_millis()}
'''


@pytest.fixture()
def runtime(tmp_path: Path) -> Iterator[LambdaRuntime]:
    (tmp_path / "fake_handler.py").write_text(HANDLER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPSCALER_")}
    env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{os.getcwd()}", UPSCALER_JOBS_TABLE="table-from-stack")
    rt = LambdaRuntime(function_name="fake", handler="fake_handler:handler", environment=env,
                       region="eu-west-1", concurrency=1, timeout_seconds=3)
    yield rt
    rt.close()


def test_environment_context_errors_and_a_replaced_environment(runtime: LambdaRuntime) -> None:
    first = runtime.invoke({"n": 1})
    assert first["table"] == "table-from-stack" and "UPSCALER_JOBS_TABLE" not in os.environ
    assert first["function"] == "fake"
    assert first["arn"] == "arn:aws:lambda:eu-west-1:000000000000:function:fake"
    assert first["pid"] != os.getpid()
    second = runtime.invoke({"n": 2})
    assert second["pid"] == first["pid"] and second["request"] != first["request"]  # warm: same environment

    with pytest.raises(LambdaInvocationError, match="ValueError: bad record"):
        runtime.invoke({"raise": True})
    with pytest.raises(LambdaInvocationError, match="exited"):
        runtime.invoke({"crash": True})
    after = runtime.invoke({"n": 3})  # a new execution environment (cold start)
    assert after["pid"] != first["pid"] and after["table"] == "table-from-stack"


def test_an_init_error_is_reported(tmp_path: Path) -> None:
    rt = LambdaRuntime(function_name="missing", handler="no_such_module_here:handler",
                       environment=dict(os.environ), region="us-east-1")
    try:
        with pytest.raises(LambdaInvocationError, match=r"init failed.*ModuleNotFoundError"):
            rt.warm()
    finally:
        rt.close()


def test_an_invocation_past_the_timeout_is_killed_and_fails_as_lambda_reports_it(runtime: LambdaRuntime) -> None:
    first = runtime.invoke({"n": 1})
    assert 0 < first["remaining_ms"] <= 3000  # the time really left, not the whole timeout every time
    with pytest.raises(LambdaInvocationError, match=r"Task timed out after 3\.00 seconds"):
        runtime.invoke({"sleep": 60})  # killed at 3 s, not after 60
    assert runtime.in_flight == 0
    after = runtime.invoke({"n": 2})  # its execution environment was killed: a cold start
    assert after["pid"] != first["pid"]
