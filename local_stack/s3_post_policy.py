"""S3's check of a browser-based upload (a presigned POST): the signed policy against the form and the file.

moto (5.x) stores a POSTed object without looking at its policy; the local stack's S3 checks it as S3 does
(local_stack.moto_server), so an upload that changes a bound option or sends more bytes than the job declared
is refused locally as it is in AWS. The rules:
https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html and
https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-authentication-HTTPPOST.html
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

# Form fields every policy may leave out (S3's list).
UNCONDITIONED_FIELDS = frozenset({"policy", "x-amz-signature", "file"})
IGNORED_PREFIX = "x-ignore-"


class PostRefused(Exception):
    """S3 refuses the upload: an HTTP status, S3's error code and its message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message

    def xml(self) -> str:
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{self.code}</Code>'
                f"<Message>{escape(self.message)}</Message></Error>")


def check_post(form: Mapping[str, str], file_size: int, *, bucket: str, now: datetime,
               secret_for: Callable[[str], str | None]) -> None:
    """Raise PostRefused unless S3 would store this POST. `secret_for(access key id)`: the secret that signs for
    it, or None to skip the signature (a key the local stack does not know)."""
    fields = {name.lower(): value for name, value in form.items()}
    fields["bucket"] = bucket
    encoded = fields.get("policy", "")
    try:
        policy = json.loads(base64.b64decode(encoded, validate=True))
        expiration = datetime.fromisoformat(str(policy["expiration"]).replace("Z", "+00:00"))
        conditions = list(policy["conditions"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PostRefused(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.") from exc
    _check_signature(fields, encoded, secret_for)
    if expiration <= now.astimezone(UTC):
        raise PostRefused(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    covered = {"bucket"}
    for condition in conditions:
        covered.add(_check_condition(condition, fields, file_size))
    extra = sorted(name for name in fields if name not in covered and name not in UNCONDITIONED_FIELDS
                   and not name.startswith(IGNORED_PREFIX))
    if extra:
        raise PostRefused(403, "AccessDenied", f"Invalid according to Policy: Extra input fields: {', '.join(extra)}")


def _check_condition(condition: Any, fields: Mapping[str, str], file_size: int) -> str:
    """Raise PostRefused when `condition` fails; the form field it covers ("" for the length range)."""
    if isinstance(condition, dict) and len(condition) == 1:
        ((name, value),) = condition.items()
        condition = ["eq", f"${name}", value]
    if isinstance(condition, list) and len(condition) == 3 and condition[0] == "content-length-range":
        low, high = int(condition[1]), int(condition[2])
        if file_size > high:
            raise PostRefused(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        if file_size < low:
            raise PostRefused(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size")
        return ""
    if isinstance(condition, list) and len(condition) == 3 and condition[0] in ("eq", "starts-with") \
            and str(condition[1]).startswith("$"):
        name = str(condition[1])[1:].lower()
        actual = fields.get(name, "")
        if (actual != condition[2]) if condition[0] == "eq" else not actual.startswith(str(condition[2])):
            raise PostRefused(403, "AccessDenied",
                              f"Invalid according to Policy: Policy Condition failed: {json.dumps(condition)}")
        return name
    raise PostRefused(400, "InvalidPolicyDocument", f"Invalid Policy: Invalid Condition: {json.dumps(condition)}")


def _check_signature(fields: Mapping[str, str], encoded_policy: str,
                     secret_for: Callable[[str], str | None]) -> None:
    """SigV4 for POST: the signature is an HMAC of the base64 policy with the credential scope's signing key."""
    if fields.get("x-amz-algorithm") != "AWS4-HMAC-SHA256":
        raise PostRefused(400, "InvalidRequest", "The x-amz-algorithm field must be AWS4-HMAC-SHA256.")
    try:
        access_key, date, region, service, terminal = fields["x-amz-credential"].split("/")
        signature = fields["x-amz-signature"]
    except (KeyError, ValueError) as exc:
        raise PostRefused(400, "InvalidArgument", "The x-amz-credential or x-amz-signature field is malformed.",
                          ) from exc
    secret = secret_for(access_key)
    if secret is None:
        return
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, terminal):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, encoded_policy.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise PostRefused(403, "SignatureDoesNotMatch",
                          "The request signature we calculated does not match the signature you provided.")
