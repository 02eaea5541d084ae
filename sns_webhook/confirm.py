"""Confirming an SNS HTTPS subscription: verify the SubscriptionConfirmation, then GET its SubscribeURL."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from sns_webhook.verify import SignatureError, verify_message

# The SubscribeURL of a genuine confirmation points back at the SNS API over HTTPS.
SNS_SUBSCRIBE_URL_PATTERN = r"https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/\?.*"

UrlOpener = Callable[[str], bytes]


def _https_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:  # the URL was checked against the trusted pattern
        return resp.read(1024 * 1024)


def confirm_subscription(
    message: Mapping[str, Any],
    *,
    open_url: UrlOpener = _https_get,
    subscribe_url_pattern: str | re.Pattern[str] = SNS_SUBSCRIBE_URL_PATTERN,
    **verify_options: Any,
) -> bytes:
    """Verify `message` (options as for verify_message) and confirm it; returns SNS's response body.

    Raises SignatureError for a forged or stale message, ValueError if it is not a
    SubscriptionConfirmation or its SubscribeURL does not point at a trusted host.
    """
    if message.get("Type") != "SubscriptionConfirmation":
        raise ValueError(f"not a SubscriptionConfirmation: Type={message.get('Type')!r}")
    verify_message(message, **verify_options)
    url = str(message.get("SubscribeURL") or "")
    if not re.fullmatch(subscribe_url_pattern, url):
        raise ValueError(f"SubscribeURL {url!r} is not a trusted SNS endpoint")
    return open_url(url)


__all__ = ["SignatureError", "confirm_subscription"]
