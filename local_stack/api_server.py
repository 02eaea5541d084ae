"""The HTTP API on 127.0.0.1: each request becomes an API Gateway HTTP API event for the real API handler
(run in its own Lambda execution environment, like the other functions), and the web page is served beside it.

Who calls, as API Gateway's IAM authorizer would say it: a SigV4-signed request (service `execute-api`, checked
with the local stack's secret key `local`, any access key id) is `arn:aws:iam::000000000000:user/<access key
id>`; `curl --aws-sigv4` and `upscaler submit` sign. Local only, for a quick try without signing: the header
`X-Upscaler-Local-Caller: <name>` makes the caller `arn:aws:iam::000000000000:user/<name>`. Anything else is
refused with 403, as API Gateway refuses it.

The JWT mode's stand-in (`LocalJwtIssuer`): a bearer token HS256-signed with a shared secret, with the issuer
and an audience (or Cognito's `client_id`) API Gateway's JWT authorizer would check; its claims reach the
handler as they do in AWS. (AWS checks the issuer's RS256 signature through its JWKS instead.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local_stack.api_gateway_events import (
    LOCAL_ACCOUNT,
    http_api_event,
    iam_authorizer,
    jwt_authorizer,
    response_parts,
)
from local_stack.http_server import BackgroundHttpServer
from web.security import STATIC_FILES, security_headers

log = logging.getLogger(__name__)

LOCAL_CALLER_HEADER = "x-upscaler-local-caller"
SIGV4_SERVICE = "execute-api"
MAX_SKEW_SECONDS = 15 * 60  # API Gateway refuses a signature older (or newer) than this
MAX_BODY_BYTES = 1024 * 1024  # beyond what the handler takes (it answers 413 itself); bounds this server's reads
_AUTHORIZATION = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
                            r"SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})")
_CALLER_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")  # what an IAM user name may hold


@dataclass(frozen=True, slots=True)
class LocalJwtIssuer:
    issuer: str
    audience: tuple[str, ...]
    secret: bytes

    def claims(self, token: str, now: datetime) -> dict[str, Any]:
        """The verified claims of `token`, or Forbidden (API Gateway answers 401 there; 403 here is close)."""
        try:
            header, payload, signature = token.split(".")
            expected = hmac.new(self.secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
            claims = json.loads(_unbase64(payload))
            algorithm = json.loads(_unbase64(header)).get("alg")
        except (ValueError, binascii.Error) as exc:
            raise Forbidden("The token is not a JWT") from exc
        if algorithm != "HS256" or not hmac.compare_digest(expected, _unbase64(signature)):
            raise Forbidden("The token's signature is not valid")
        audiences = claims.get("aud") or claims.get("client_id")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        if claims.get("iss") != self.issuer or not set(audiences) & set(self.audience):
            raise Forbidden("The token was not issued for this API")
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] <= now.timestamp():
            raise Forbidden("The token has expired")
        return dict(claims)


def _unbase64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Forbidden(Exception):
    """API Gateway's answer to a request its authorizer refuses (403, {"message": ...})."""


def local_user_arn(name: str) -> str:
    return f"arn:aws:iam::{LOCAL_ACCOUNT}:user/{name}"


def authorize(method: str, url: str, headers: Mapping[str, str], body: bytes, *, region: str,
              secret_for: Callable[[str], str | None], now: datetime,
              jwt: LocalJwtIssuer | None = None) -> dict[str, Any]:
    """`requestContext.authorizer` for a request, as API Gateway's IAM (or, given `jwt`, JWT) authorizer fills it;
    Forbidden if refused."""
    lowered = {k.lower(): v for k, v in headers.items()}
    authorization = lowered.get("authorization", "")
    if jwt is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Forbidden("Unauthorized: a bearer token is required")
        return jwt_authorizer(jwt.claims(token.strip(), now))
    if not authorization:
        name = lowered.get(LOCAL_CALLER_HEADER, "")
        if not _CALLER_NAME.fullmatch(name):
            raise Forbidden("Missing Authentication Token")
        return iam_authorizer(local_user_arn(name), name)
    found = _AUTHORIZATION.fullmatch(authorization.strip())
    if not found:
        raise Forbidden("Authorization header requires SigV4 (AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., "
                        "Signature=...)")
    access_key, date, scope_region, service, signed, signature = found.groups()
    secret = secret_for(access_key)
    if secret is None or scope_region != region or service != SIGV4_SERVICE:
        raise Forbidden(f"The security token included in the request is invalid (scope {scope_region}/{service}; "
                        f"this API is {region}/{SIGV4_SERVICE})")
    stamp = lowered.get("x-amz-date", "")
    try:
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise Forbidden("The request has no valid X-Amz-Date") from exc
    if abs((now - when).total_seconds()) > MAX_SKEW_SECONDS or not stamp.startswith(date):
        raise Forbidden("Signature expired: the request's X-Amz-Date is too far from now")
    names = signed.split(";")
    if "host" not in names:
        raise Forbidden("The Host header must be signed")
    request = AWSRequest(method=method, url=url, data=body, headers={n: lowered.get(n, "") for n in names})
    request.context["timestamp"] = stamp
    auth = SigV4Auth(Credentials(access_key, secret), SIGV4_SERVICE, region)
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    if expected != signature:
        raise Forbidden("The request signature we calculated does not match the signature you provided.")
    return iam_authorizer(local_user_arn(access_key), access_key)


class LocalApiServer:
    """`invoke(event) -> result` runs the API handler; `web_root` holds the page (web/), `web_config` its config."""

    def __init__(self, *, invoke: Callable[[dict[str, Any]], Any], region: str,
                 secret_for: Callable[[str], str | None], web_root: Path, web_config: Mapping[str, Any],
                 connect_sources: tuple[str, ...] = (), port: int = 0, jwt: LocalJwtIssuer | None = None) -> None:
        self._invoke = invoke
        self._region = region
        self._secret_for = secret_for
        self._web_root = web_root
        self._web_config = dict(web_config)
        self._connect_sources = connect_sources
        self._jwt = jwt
        self._server = BackgroundHttpServer(self._handler_class(), host="127.0.0.1", port=port, name="local-api")

    @property
    def url(self) -> str:
        return self._server.base_url

    def start(self) -> LocalApiServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def handle_api(self, method: str, path: str, query: str, headers: Mapping[str, str],
                   body: bytes) -> tuple[int, dict[str, str], bytes]:
        host = next((v for k, v in headers.items() if k.lower() == "host"), urlsplit(self.url).netloc)
        url = f"http://{host}{path}{'?' + query if query else ''}"
        try:
            authorizer = authorize(method, url, headers, body, region=self._region, secret_for=self._secret_for,
                                   now=datetime.now(UTC), jwt=self._jwt)
        except Forbidden as refused:
            return 403, {"Content-Type": "application/json"}, json.dumps({"message": str(refused)}).encode()
        event = http_api_event(method, path, query=query, body=body, authorizer=authorizer, domain=host,
                               headers={**headers, "x-forwarded-proto": "http"},
                               source_ip="127.0.0.1")
        try:
            return response_parts(self._invoke(event))
        except Exception:  # the function failed: API Gateway answers 500 with its own body
            log.exception("the API function failed")
            return 500, {"Content-Type": "application/json"}, b'{"message":"Internal Server Error"}'

    def handle_static(self, path: str) -> tuple[int, dict[str, str], bytes]:
        name = "index.html" if path in ("/", "") else path.lstrip("/")
        headers = security_headers(connect=("'self'", *self._connect_sources), images=self._connect_sources)
        if name == "config.json":
            return 200, {**headers, "Content-Type": "application/json", "Cache-Control": "no-store"}, json.dumps(
                self._web_config).encode()
        if name not in STATIC_FILES:
            return 404, {**headers, "Content-Type": "text/plain"}, b"not found"
        return 200, {**headers, "Content-Type": STATIC_FILES[name]}, (self._web_root / name).read_bytes()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self._reply(413, {"Content-Type": "application/json", "Connection": "close"},
                                b'{"message":"Request Entity Too Large"}')
                    return
                body = self.rfile.read(length) if length else b""
                if parts.path.startswith("/v1/"):
                    status, headers, data = server.handle_api(self.command, parts.path, parts.query,
                                                              dict(self.headers.items()), body)
                elif self.command in ("GET", "HEAD"):
                    status, headers, data = server.handle_static(parts.path)
                else:
                    status, headers, data = 405, {"Content-Type": "text/plain"}, b"method not allowed"
                self._reply(status, headers, data, send_body=self.command != "HEAD")

            def _reply(self, status: int, headers: Mapping[str, str], data: bytes, send_body: bool = True) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if send_body:
                    self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _serve

            def log_message(self, format: str, *args: object) -> None:
                log.debug("local api: " + format, *args)

        return Handler
