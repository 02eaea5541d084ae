"""The canonical string SNS signs, shared by the verifier and the local stack's signer.

https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """`Key\\nValue\\n` for each signed key in order; Subject only when present (Notification)."""
    kind = message.get("Type")
    keys: tuple[str, ...]
    if kind == "Notification":
        keys = _NOTIFICATION_KEYS
    elif kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        keys = _CONFIRMATION_KEYS
    else:
        raise ValueError(f"unknown SNS message Type {kind!r}")
    parts: list[str] = []
    for key in keys:
        if key == "Subject" and message.get("Subject") is None:
            continue
        if key not in message:
            raise ValueError(f"SNS {kind} message lacks {key}")
        parts.append(f"{key}\n{message[key]}\n")
    return "".join(parts).encode("utf-8")
