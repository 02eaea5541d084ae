"""API Gateway HTTP API events (payload format 2.0), as the service builds them for a Lambda integration.

The local API server makes one per HTTP request; the API's handler tests make them directly. Shape:
https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

LOCAL_ACCOUNT = "000000000000"


def iam_authorizer(user_arn: str, access_key: str = "", account: str = LOCAL_ACCOUNT) -> dict[str, Any]:
    """`requestContext.authorizer` of a route with IAM authorization, as API Gateway fills it after SigV4."""
    return {"iam": {"accessKey": access_key, "accountId": account, "callerId": access_key, "cognitoIdentity": None,
                    "principalOrgId": None, "userArn": user_arn, "userId": access_key}}


def jwt_authorizer(claims: Mapping[str, Any], scopes: list[str] | None = None) -> dict[str, Any]:
    """`requestContext.authorizer` of a route with a JWT authorizer (claims of the verified token)."""
    return {"jwt": {"claims": dict(claims), "scopes": scopes}}


def http_api_event(method: str, path: str, *, query: str = "", headers: Mapping[str, str] | None = None,
                   body: bytes | str | None = None, authorizer: Mapping[str, Any] | None = None,
                   domain: str = "api.local", stage: str = "$default", source_ip: str = "127.0.0.1",
                   route_key: str | None = None) -> dict[str, Any]:
    """One request as the Lambda integration receives it: header names lower case, repeated query values joined
    with commas, a body that is not UTF-8 text base64-encoded."""
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    lowered.setdefault("host", domain)
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        params[name] = f"{params[name]},{value}" if name in params else value
    raw = body.encode() if isinstance(body, str) else body
    text: str | None = None
    encoded = False
    if raw:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(raw).decode(), True
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key or "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": lowered,
        "requestContext": {
            "accountId": LOCAL_ACCOUNT, "apiId": "local", "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0],
            "http": {"method": method.upper(), "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": lowered.get("user-agent", "")},
            "requestId": uuid.uuid4().hex, "routeKey": route_key or "$default", "stage": stage,
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)), "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if params:
        event["queryStringParameters"] = params
    if text is not None:
        event["body"] = text
    if authorizer is not None:
        event["requestContext"]["authorizer"] = dict(authorizer)
    return event


def response_parts(result: Mapping[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a Lambda proxy response (payload 2.0, structured form)."""
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    if result.get("cookies"):
        headers["set-cookie"] = "; ".join(result["cookies"])
    return int(result.get("statusCode", 200)), headers, data
