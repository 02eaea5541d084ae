"""Verifying that a webhook delivery really came from the upscaler's SNS topic.

Follows https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html:
the signing certificate must come from an SNS host over HTTPS, the signature (SHA1withRSA for
SignatureVersion 1, SHA256withRSA for 2) must match the canonical string, and the message must be
fresh so a captured delivery cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import urllib.request
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sns_webhook.canonical import string_to_sign
from sns_webhook.sign import SIGNATURE_HASHES

# https://sns.<region>.amazonaws.com[.cn]/<anything>.pem, nothing else (no other host, port or user).
SNS_CERT_URL_PATTERN = r"https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[A-Za-z0-9._/-]+\.pem"
DEFAULT_MAX_AGE = timedelta(hours=1)
CLOCK_SKEW = timedelta(minutes=5)  # a Timestamp slightly in the future is clock skew, not an attack
MAX_CERT_BYTES = 64 * 1024

MESSAGE_TYPES = frozenset({"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"})


class SignatureError(Exception):
    """The message is not a genuine, fresh SNS message from a trusted signer. Reject it (HTTP 403)."""


CertFetcher = Callable[[str], bytes]


def verify_message(
    message: Mapping[str, Any],
    *,
    cert_url_pattern: str | re.Pattern[str] = SNS_CERT_URL_PATTERN,
    max_age: timedelta = DEFAULT_MAX_AGE,
    fetch_cert: CertFetcher | None = None,
    topic_arns: Collection[str] | None = None,
    now: datetime | None = None,
) -> None:
    """Raise SignatureError unless `message` (the parsed JSON body of the POST) is genuine and fresh.

    `cert_url_pattern` must match the whole SigningCertURL (default: SNS hosts only). `topic_arns`,
    when given, is the allow-list of topics this receiver accepts. `fetch_cert` defaults to an HTTPS
    GET with a small in-process cache.
    """
    kind = message.get("Type")
    if kind not in MESSAGE_TYPES:
        raise SignatureError(f"unknown SNS message Type {kind!r}")
    if topic_arns is not None and message.get("TopicArn") not in topic_arns:
        raise SignatureError(f"message from unexpected topic {message.get('TopicArn')!r}")

    version = str(message.get("SignatureVersion", ""))
    digest = SIGNATURE_HASHES.get(version)
    if digest is None:
        raise SignatureError(f"unsupported SignatureVersion {version!r}")

    cert_url = str(message.get("SigningCertURL") or message.get("SigningCertUrl") or "")
    _check_cert_url(cert_url, cert_url_pattern)

    now = now or datetime.now(UTC)
    _check_timestamp(message.get("Timestamp"), now=now, max_age=max_age)

    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("Signature is not valid base64") from exc
    if not signature:
        raise SignatureError("message has no Signature")

    try:
        signed_bytes = string_to_sign(message)
    except ValueError as exc:
        raise SignatureError(str(exc)) from exc

    certificate = _load_certificate((fetch_cert or fetch_certificate)(cert_url))
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise SignatureError("signing certificate is not valid at this time")
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SignatureError("signing certificate does not hold an RSA key")
    try:
        public_key.verify(signature, signed_bytes, padding.PKCS1v15(), digest())
    except InvalidSignature as exc:
        raise SignatureError("signature does not match the message") from exc


def _check_cert_url(url: str, pattern: str | re.Pattern[str]) -> None:
    if not url:
        raise SignatureError("message has no SigningCertURL")
    if not re.fullmatch(pattern, url):
        raise SignatureError(f"SigningCertURL {url!r} is not from a trusted host")
    parts = urlsplit(url)
    if parts.username or parts.password or parts.query or parts.fragment:
        raise SignatureError(f"SigningCertURL {url!r} has credentials, a query or a fragment")


def _check_timestamp(raw: Any, *, now: datetime, max_age: timedelta) -> None:
    try:
        stamp = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError as exc:
        raise SignatureError(f"Timestamp {raw!r} is not ISO-8601") from exc
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    if now - stamp > max_age:
        raise SignatureError(f"message is stale: Timestamp {raw} is older than {max_age}")
    if stamp - now > CLOCK_SKEW:
        raise SignatureError(f"Timestamp {raw} is in the future")


def _load_certificate(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise SignatureError("SigningCertURL did not return a PEM certificate") from exc


_cert_cache: dict[str, bytes] = {}
_cert_cache_lock = threading.Lock()
_CERT_CACHE_SIZE = 16


def fetch_certificate(url: str, *, timeout: float = 5.0) -> bytes:
    """GET the signing certificate (HTTPS only via the URL check), cached per URL in this process.

    SNS rotates certificates by publishing a new URL, so caching by URL never serves a stale key.
    """
    with _cert_cache_lock:
        cached = _cert_cache.get(url)
    if cached is not None:
        return cached
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # the URL was checked against the trusted pattern
            body = resp.read(MAX_CERT_BYTES + 1)
    except OSError as exc:
        raise SignatureError(f"cannot fetch signing certificate {url}: {exc}") from exc
    if len(body) > MAX_CERT_BYTES:
        raise SignatureError("signing certificate is implausibly large")
    with _cert_cache_lock:
        if len(_cert_cache) >= _CERT_CACHE_SIZE:
            _cert_cache.pop(next(iter(_cert_cache)))
        _cert_cache[url] = body
    return body
