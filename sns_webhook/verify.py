"""Verifying that a webhook delivery really came from the upscaler's SNS topic.

Follows https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html:
the signing certificate must come from an SNS host over HTTPS, the signature (SHA1withRSA for
SignatureVersion 1, SHA256withRSA for 2) must match the canonical string, and the message must be
fresh so a captured delivery cannot be replayed later.

The SNS host rule is stricter than AWS's own SDK validators (`sns.<3+ of [a-zA-Z0-9-]>.amazonaws.com`):
the label must be shaped like a region name (`us-east-1`, `us-gov-west-1`, `cn-north-1`), because
S3's legacy endpoints also match the SDK rule (`sns.s3-external-1.amazonaws.com` is the bucket "sns").
Every malformed message (wrong JSON shapes included) raises SignatureError, never another exception.
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

# sns.<region>.amazonaws.com[.cn]: a region name is letters-dashes-digit(s), never an S3 endpoint label.
SNS_HOST_PATTERN = r"sns\.[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}\.amazonaws\.com(?:\.cn)?"
# https://<SNS host>/<anything>.pem, nothing else (no other host, port or user).
SNS_CERT_URL_PATTERN = rf"https://{SNS_HOST_PATTERN}/[A-Za-z0-9._/-]+\.pem"
DEFAULT_MAX_AGE = timedelta(hours=1)
CLOCK_SKEW = timedelta(minutes=5)  # a Timestamp slightly in the future is clock skew, not an attack
MAX_CERT_BYTES = 64 * 1024

MESSAGE_TYPES = frozenset({"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"})
SIGNATURE_VERSIONS = frozenset(SIGNATURE_HASHES)  # "1" (SHA1withRSA) and "2" (SHA256withRSA)
SIGNATURE_V2_ONLY = frozenset({"2"})  # recommended once the topic sets SignatureVersion 2
# Fields that are strings whenever present (Subject may also be null).
_STRING_FIELDS = ("Type", "MessageId", "TopicArn", "Subject", "Message", "Timestamp", "SignatureVersion",
                  "Signature", "SigningCertURL", "SigningCertUrl", "SubscribeURL", "Token", "UnsubscribeURL")


class SignatureError(Exception):
    """The message is not a genuine, fresh SNS message from a trusted signer. Reject it (HTTP 403)."""


CertFetcher = Callable[[str], bytes]


class AnyTopic:
    """The type of ANY_TOPIC: accept messages from every topic (tests and single-topic local stacks only)."""

    def __repr__(self) -> str:
        return "ANY_TOPIC"


ANY_TOPIC = AnyTopic()


def verify_message(
    message: object,
    *,
    topic_arns: Collection[str] | AnyTopic,
    cert_url_pattern: str | re.Pattern[str] = SNS_CERT_URL_PATTERN,
    signature_versions: Collection[str] = SIGNATURE_VERSIONS,
    max_age: timedelta = DEFAULT_MAX_AGE,
    fetch_cert: CertFetcher | None = None,
    now: datetime | None = None,
) -> None:
    """Raise SignatureError unless `message` (the parsed JSON body of the POST) is genuine and fresh.

    `topic_arns` is the allow-list of topics this receiver accepts (required: anyone can point an SNS
    topic of their own at a public endpoint; pass ANY_TOPIC to opt out explicitly). `cert_url_pattern`
    must match the whole SigningCertURL (default: SNS hosts only). `signature_versions`: pass
    SIGNATURE_V2_ONLY when the topic signs with SHA256. `fetch_cert` defaults to an HTTPS GET with a
    small in-process cache.
    """
    message = check_shape(message)
    kind = message.get("Type")
    if kind not in MESSAGE_TYPES:
        raise SignatureError(f"unknown SNS message Type {kind!r}")
    if isinstance(topic_arns, str):
        raise TypeError("topic_arns must be a collection of topic ARNs (or ANY_TOPIC), not one string")
    if not isinstance(topic_arns, AnyTopic) and message.get("TopicArn") not in topic_arns:
        raise SignatureError(f"message from unexpected topic {message.get('TopicArn')!r}")

    version = message.get("SignatureVersion", "")
    digest = SIGNATURE_HASHES.get(version)
    if digest is None or version not in signature_versions:
        raise SignatureError(f"unsupported SignatureVersion {version!r} (accepted: {sorted(signature_versions)})")

    cert_url = message.get("SigningCertURL") or message.get("SigningCertUrl") or ""
    _check_cert_url(cert_url, cert_url_pattern)

    now = now or datetime.now(UTC)
    _check_timestamp(message.get("Timestamp"), now=now, max_age=max_age)

    try:
        signature = base64.b64decode(message.get("Signature") or "", validate=True)
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


def check_shape(message: object) -> Mapping[str, Any]:
    """`message` as a JSON object whose SNS fields are strings, else SignatureError (never TypeError/KeyError)."""
    if not isinstance(message, Mapping):
        raise SignatureError(f"an SNS message is a JSON object, not {type(message).__name__}")
    for name in _STRING_FIELDS:
        value = message.get(name)
        if value is not None and not isinstance(value, str):
            raise SignatureError(f"SNS field {name} must be a string, not {type(value).__name__}")
    return message


def _check_cert_url(url: str, pattern: str | re.Pattern[str]) -> None:
    if not url:
        raise SignatureError("message has no SigningCertURL")
    if not re.fullmatch(pattern, url):
        raise SignatureError(f"SigningCertURL {url!r} is not from a trusted host")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # a custom pattern let a malformed URL through
        raise SignatureError(f"SigningCertURL {url!r} is not a URL") from exc
    if parts.username or parts.password or parts.query or parts.fragment:
        raise SignatureError(f"SigningCertURL {url!r} has credentials, a query or a fragment")


def _check_timestamp(raw: str | None, *, now: datetime, max_age: timedelta) -> None:
    if raw is None:
        raise SignatureError("message has no Timestamp")
    try:
        stamp = datetime.fromisoformat(raw.replace("Z", "+00:00"))
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
