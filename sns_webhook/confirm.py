"""Confirming an SNS HTTPS subscription: verify the SubscriptionConfirmation, then GET its SubscribeURL."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable, Collection
from typing import Any

from sns_webhook.verify import SNS_HOST_PATTERN, AnyTopic, SignatureError, check_shape, verify_message

# The SubscribeURL of a genuine confirmation points back at the SNS API over HTTPS.
SNS_SUBSCRIBE_URL_PATTERN = rf"https://{SNS_HOST_PATTERN}/\?.*"

UrlOpener = Callable[[str], bytes]


def _https_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:  # the URL was checked against the trusted pattern
        return resp.read(1024 * 1024)


def confirm_subscription(
    message: object,
    *,
    topic_arns: Collection[str] | AnyTopic,
    open_url: UrlOpener = _https_get,
    subscribe_url_pattern: str | re.Pattern[str] = SNS_SUBSCRIBE_URL_PATTERN,
    **verify_options: Any,
) -> bytes:
    """Verify `message` (options as for verify_message) and confirm it; returns SNS's response body.

    Raises SignatureError for a forged, stale or malformed message, ValueError if it is not a
    SubscriptionConfirmation or its SubscribeURL does not point at a trusted host.
    """
    message = check_shape(message)
    if message.get("Type") != "SubscriptionConfirmation":
        raise ValueError(f"not a SubscriptionConfirmation: Type={message.get('Type')!r}")
    verify_message(message, topic_arns=topic_arns, **verify_options)
    url = message.get("SubscribeURL") or ""
    if not re.fullmatch(subscribe_url_pattern, url):
        raise ValueError(f"SubscribeURL {url!r} is not a trusted SNS endpoint")
    return open_url(url)


__all__ = ["SignatureError", "confirm_subscription"]
