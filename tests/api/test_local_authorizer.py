"""The local API server identifies callers as API Gateway's authorizers would: a SigV4 signature checked with the
local secret, the local-only caller header, or (JWT mode) a verified token; anything else is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from fake_oidc import hs256_token

from functions.api.callers import caller_of
from local_stack.api_server import Forbidden, LocalJwtIssuer, authorize, local_user_arn

URL = "http://127.0.0.1:8080/v1/jobs?limit=5&cursor=abc"
REGION = "us-east-1"
SECRET = "local"


def signed(body: bytes = b'{"a": 1}', *, secret: str = SECRET, region: str = REGION,
           service: str = "execute-api", url: str = URL) -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("AKIDLOCAL", secret), service, region).add_auth(request)
    return dict(request.headers.items())


def check(headers: dict[str, str], body: bytes = b'{"a": 1}', *, now: datetime | None = None,
          jwt: LocalJwtIssuer | None = None) -> str | None:
    authorizer = authorize("POST", URL, {"Host": "127.0.0.1:8080", **headers}, body, region=REGION,
                           secret_for=lambda _key: SECRET, now=now or datetime.now(UTC), jwt=jwt)
    return caller_of({"requestContext": {"authorizer": authorizer}})


def test_a_botocore_signed_request_is_its_access_keys_user() -> None:
    assert check(signed()) == local_user_arn("AKIDLOCAL")


@pytest.mark.parametrize(("headers", "body"), [
    (signed(), b'{"a": 2}'),  # the body changed after signing
    (signed(secret="other"), b'{"a": 1}'),
    (signed(region="eu-west-1"), b'{"a": 1}'),
    (signed(service="s3"), b'{"a": 1}'),
    (signed(url=URL.replace("limit=5", "limit=6")), b'{"a": 1}'),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, b'{"a": 1}'),
    ({}, b'{"a": 1}'),
    ({"X-Upscaler-Local-Caller": "bob/../../admin"}, b'{"a": 1}'),
])
def test_anything_else_is_refused(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(Forbidden):
        check(headers, body)


def test_an_old_signature_is_refused() -> None:
    with pytest.raises(Forbidden, match="expired"):
        check(signed(), now=datetime.now(UTC) + timedelta(minutes=16))


def test_the_local_caller_header_names_a_user() -> None:
    assert check({"X-Upscaler-Local-Caller": "alice"}) == local_user_arn("alice")


def test_jwt_mode_takes_only_a_verified_token_of_the_issuer_for_this_audience() -> None:
    issuer = LocalJwtIssuer("https://issuer.example", ("client",), b"secret")
    now = datetime.now(UTC)
    good = {"iss": "https://issuer.example", "sub": "u1", "client_id": "client", "exp": now.timestamp() + 60}
    token = hs256_token(good, b"secret")
    assert check({"Authorization": f"Bearer {token}"}, jwt=issuer) == "https://issuer.example#u1"
    for claims, key in (({**good, "iss": "https://evil.example"}, b"secret"), ({**good, "client_id": "x"}, b"secret"),
                        ({**good, "exp": now.timestamp() - 1}, b"secret"), (good, b"another key")):
        with pytest.raises(Forbidden):
            check({"Authorization": f"Bearer {hs256_token(claims, key)}"}, jwt=issuer)
    with pytest.raises(Forbidden):
        check(signed(), jwt=issuer)  # SigV4 is not taken in JWT mode, as on API Gateway
