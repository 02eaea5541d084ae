"""Verifying a per-request webhook (Standard Webhooks v1) with the stock `standardwebhooks` library.

The upscaler signs each delivery with its deployment's secret (`whsec_...`); while that secret is being
rotated a receiver may know the old and the new one: `verify_delivery` accepts a delivery signed by any
of the secrets it is given. Delivery is at least once: dedupe on the returned `webhook_id` (the
notification's `event_id`; every copy of a notification carries the same one and the same body).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class WebhookSignatureError(Exception):
    """Not signed by any of the secrets, stale (over 5 minutes), or malformed. Reject it (HTTP 401)."""


@dataclass(frozen=True, slots=True)
class VerifiedDelivery:
    webhook_id: str  # = payload["event_id"]: the dedupe key
    payload: dict[str, Any]  # the notification


def verify_delivery(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> VerifiedDelivery:
    """The notification in `body` (the raw request body, exactly as received), or WebhookSignatureError."""
    if isinstance(secrets, str):
        raise TypeError("secrets must be a sequence of whsec_ secrets, not one string")
    lowered = {name.lower(): value for name, value in headers.items()}
    for secret in secrets:
        try:
            payload = Webhook(secret).verify(body, lowered)
        except WebhookVerificationError:
            continue
        if not isinstance(payload, dict) or payload.get("event_id") != lowered["webhook-id"]:
            raise WebhookSignatureError("the signed body is not the notification its webhook-id names")
        return VerifiedDelivery(webhook_id=lowered["webhook-id"], payload=payload)
    raise WebhookSignatureError("no valid signature by a known secret (or the timestamp is over 5 minutes off)")
