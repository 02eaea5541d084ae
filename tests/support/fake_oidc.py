"""A tiny OpenID Connect provider for the web page's JWT-mode test: discovery, an authorize endpoint that signs
the user in at once (redirecting back with a code), and a token endpoint that checks PKCE (S256) and returns an
HS256 access token the local API server's LocalJwtIssuer accepts. Cross-origin, like a real identity provider."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from local_stack.http_server import BackgroundHttpServer


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hs256_token(claims: dict[str, Any], secret: bytes) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


class FakeOidcProvider:
    def __init__(self, *, client_id: str, subject: str, secret: bytes) -> None:
        self.client_id, self.subject, self.secret = client_id, subject, secret
        self._codes: dict[str, dict[str, str]] = {}  # code -> the authorize request's parameters
        self._lock = threading.Lock()
        self.tokens_issued = 0
        self.refusals: list[str] = []
        self._server = BackgroundHttpServer(self._handler(), host="127.0.0.1", port=0, name="fake-oidc")

    @property
    def issuer(self) -> str:
        return self._server.base_url

    def start(self) -> FakeOidcProvider:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            request = self._codes.pop(form.get("code", ""), None)
        if request is None or form.get("grant_type") != "authorization_code" \
                or form.get("client_id") != self.client_id or form.get("redirect_uri") != request["redirect_uri"]:
            self.refusals.append("unknown code, client or redirect")
            return 400, {"error": "invalid_grant"}
        challenge = b64url(hashlib.sha256(form.get("code_verifier", "").encode()).digest())
        if request.get("code_challenge_method") != "S256" or challenge != request.get("code_challenge"):
            self.refusals.append("PKCE verifier does not match")
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        now = int(time.time())
        self.tokens_issued += 1
        # A Cognito-style access token: the client id in `client_id`, no `aud`.
        token = hs256_token({"iss": self.issuer, "sub": self.subject, "client_id": self.client_id,
                             "token_use": "access", "scope": "openid", "iat": now, "exp": now + 3600}, self.secret)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/.well-known/openid-configuration":
                    self._json(200, {"issuer": provider.issuer,
                                     "authorization_endpoint": f"{provider.issuer}/authorize",
                                     "token_endpoint": f"{provider.issuer}/token"})
                    return
                if parts.path == "/authorize":
                    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                    code = secrets.token_urlsafe(16)
                    with provider._lock:
                        provider._codes[code] = query
                    self.send_response(302)
                    target = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query.get('state', '')})}"
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                self._json(*provider._token(form)) if self.path == "/token" else self._json(404, {})

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
