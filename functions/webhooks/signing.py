"""Standard Webhooks v1 signatures (https://www.standardwebhooks.com/): what the receiver verifies.

`webhook-signature` is `v1,` + base64(HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")), where
the key is the base64-decoded part of a `whsec_...` secret. During a rotation the secret holds several
secrets (space-separated) and every delivery carries one signature per secret, space-separated, so a
receiver that knows either one verifies it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"
# The spec's bounds on the key (24..64 bytes); generated keys are 32 bytes.
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64
GENERATED_KEY_BYTES = 32
SIGNATURE_VERSION = "v1"


class SecretError(ValueError):
    """The signing secret is not one or more `whsec_<base64>` secrets (the message never shows it)."""


def generate_secret() -> str:
    """A fresh `whsec_...` secret (the local stack's; the cloud one is made by Secrets Manager)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(GENERATED_KEY_BYTES)).decode("ascii")


def _key(secret: str) -> bytes:
    """The key of one secret: `whsec_<base64>`, or the bare base64 (what Secrets Manager generates)."""
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretError("a webhook signing secret is not base64 (after its whsec_ prefix)") from exc
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise SecretError(f"a webhook signing key must be {MIN_KEY_BYTES}..{MAX_KEY_BYTES} bytes, not {len(key)}")
    return key


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The keys every delivery is signed with: the current one first, then any still accepted in a rotation."""

    keys: tuple[bytes, ...]

    @classmethod
    def parse(cls, value: str) -> SigningKeys:
        """The secret's value: one or more secrets separated by whitespace."""
        parts = value.split()
        if not parts:
            raise SecretError("the webhook signing secret is empty")
        return cls(tuple(_key(part) for part in parts))

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` header: one `v1,<base64>` per key, space-separated."""
        signed = f"{msg_id}.{timestamp}.".encode() + body
        return " ".join(f"{SIGNATURE_VERSION},{base64.b64encode(hmac.digest(key, signed, hashlib.sha256)).decode()}"
                        for key in self.keys)

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers of one delivery attempt."""
        return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
                "webhook-signature": self.signature(msg_id, timestamp, body)}
