"""Who is calling: the identity API Gateway's authorizer put on the request (never anything the client sent).

IAM (SigV4): the principal's ARN (an assumed role's ARN names the session too); a Cognito identity pool's
credentials share one role session name, so those callers are told apart by their identity id. JWT: the token's
issuer and subject. Each job records its caller; a caller sees and cancels only its own jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_CALLER_BYTES = 2048  # DynamoDB's bound on an index partition key; longer identities are not accepted


def caller_of(event: Mapping[str, Any]) -> str | None:
    """The caller of an API Gateway HTTP API (payload 2.0) event, or None when no authorizer identified one."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    caller: str | None = None
    claims = (authorizer.get("jwt") or {}).get("claims") or {}
    iam = authorizer.get("iam") or {}
    if claims.get("iss") and claims.get("sub"):
        caller = f"{claims['iss']}#{claims['sub']}"
    elif (iam.get("cognitoIdentity") or {}).get("identityId"):
        identity = iam["cognitoIdentity"]
        caller = f"cognito-identity:{identity.get('identityPoolId', '')}#{identity['identityId']}"
    elif iam.get("userArn"):
        caller = str(iam["userArn"])
    return caller if caller and len(caller.encode()) <= MAX_CALLER_BYTES else None
