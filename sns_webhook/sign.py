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


def sign_message(
    message: dict[str, Any], private_key_pem: bytes, *, signature_version: str = "2"
) -> dict[str, Any]:
    """A copy of `message` with `SignatureVersion` and base64 `Signature` over its canonical string.

    The caller sets `SigningCertURL` (pointing at the certificate of `private_key_pem`).
    """
    digest = SIGNATURE_HASHES.get(signature_version)
    if digest is None:
        raise ValueError(f"unsupported SignatureVersion {signature_version!r}; expected 1 or 2")
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("SNS signatures are RSA; the private key is not an RSA key")
    signed = {k: v for k, v in message.items() if k not in ("Signature", "SignatureVersion")}
    signed["SignatureVersion"] = signature_version
    signature = key.sign(string_to_sign(signed), padding.PKCS1v15(), digest())
    signed["Signature"] = base64.b64encode(signature).decode("ascii")
    return signed


def generate_signing_identity(common_name: str = "sns.local", *, days: int = 365) -> tuple[bytes, bytes]:
    """A fresh RSA-2048 key and a self-signed certificate for it: (private_key_pem, certificate_pem).

    For the local stack and tests only; receivers trust it by pointing `cert_url_pattern` at the URL
    it is served from.
    """
    import datetime as dt

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
