"""Signing SNS-style messages with a local key: the local stack's webhook delivery and the tests.

Real SNS signs with Amazon's key; the local stack signs with its own key and serves its own
certificate, so receivers verify local deliveries with exactly the code they use in production.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sns_webhook.canonical import string_to_sign

# SignatureVersion -> digest SNS uses with RSA PKCS#1 v1.5 ("SHA1withRSA" / "SHA256withRSA").
SIGNATURE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


def sign_message(message: dict[str, Any], private_key_pem: bytes, *, signature_version: str = "2") -> dict[str, Any]:
    """A copy of `message` with `SignatureVersion` and base64 `Signature` over its canonical string.

    The caller sets `SigningCertURL` (pointing at the certificate of `private_key_pem`).
    """
    digest = SIGNATURE_HASHES.get(signature_version)
    if digest is None:
        raise ValueError(f"unsupported SignatureVersion {signature_version!r}; expected one of {sorted(SIGNATURE_HASHES)}")
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("SNS signatures are RSA; the private key is not an RSA key")
    signed = {k: v for k, v in message.items() if k not in ("Signature", "SignatureVersion")}
    signed["SignatureVersion"] = signature_version
    signature = key.sign(string_to_sign(signed), padding.PKCS1v15(), digest())
    signed["Signature"] = base64.b64encode(signature).decode("ascii")
    return signed
