"""The web page in JWT mode, in a real headless Chromium: it signs in with the issuer (authorization code + PKCE),
then calls the API with the token, and the API records the token's issuer and subject as the job's caller.
(The page's SigV4 mode, and the whole flow to a finished photo, are in tests/e2e/test_api.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from api_world import ApiWorld
from browser import launch_chromium
from fake_oidc import FakeOidcProvider

from common.contract import JobState
from functions.api import handler
from local_stack.api_server import LocalApiServer, LocalJwtIssuer
from local_stack.lambda_context import LocalLambdaContext
from web.security import WEB_ROOT

pytestmark = pytest.mark.slow

CLIENT_ID = "page-client"
SECRET = b"a secret only this test knows"


@pytest.fixture
def provider() -> Iterator[FakeOidcProvider]:
    running = FakeOidcProvider(client_id=CLIENT_ID, subject="user-1", secret=SECRET).start()
    yield running
    running.stop()


@pytest.fixture
def server(world: ApiWorld, provider: FakeOidcProvider) -> Iterator[LocalApiServer]:
    context = LocalLambdaContext(function_name="upscaler-api", memory_limit_in_mb=512, timeout_seconds=10,
                                 region=world.settings.region, aws_request_id="page")

    def invoke(event: dict[str, Any]) -> Any:
        return handler.lambda_handler(event, context)

    config = {"api_url": "", "auth": "jwt", "region": world.settings.region,
              "oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID, "scope": "openid"}}
    running = LocalApiServer(invoke=invoke, region=world.settings.region, secret_for=lambda _key: None,
                             web_root=WEB_ROOT, web_config=config, connect_sources=(provider.issuer,),
                             jwt=LocalJwtIssuer(provider.issuer, (CLIENT_ID,), SECRET)).start()
    yield running
    running.stop()


def test_the_page_signs_in_and_its_jobs_belong_to_the_tokens_subject(
        world: ApiWorld, provider: FakeOidcProvider, server: LocalApiServer, png: Callable[..., bytes],
        tmp_path: Path) -> None:
    assert requests.get(f"{server.url}/v1/jobs", timeout=5).status_code == 403  # no token, no API
    photo = tmp_path / "signed-in.png"
    photo.write_bytes(png())
    with launch_chromium() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url)
        page.get_by_role("button", name="Sign in with your account").click()
        page.wait_for_selector("body[data-ready=true]", timeout=20_000)
        assert page.url == f"{server.url}/"  # the code and state are gone from the address
        assert page.locator("#model option").count() > 1  # the options came from the API, with the token
        page.get_by_label("Photos to upscale").set_input_files(str(photo))
        page.locator(".job").first.wait_for(timeout=10_000)
        caller = f"{provider.issuer}#user-1"
        records = wait_for_jobs(world, caller)
        assert not errors, errors
    assert provider.tokens_issued == 1 and provider.refusals == []
    (record,) = records
    assert record.state is JobState.AWAITING_UPLOAD and record.attributes["filename"] == "signed-in.png"


def wait_for_jobs(world: ApiWorld, caller: str, timeout: float = 20.0) -> list[Any]:
    """The caller's jobs, once the caller index shows one (it is eventually consistent), or [] at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        records, _ = world.store.by_caller(caller, limit=10)
        if records or time.monotonic() > deadline:
            return records
        time.sleep(0.1)
