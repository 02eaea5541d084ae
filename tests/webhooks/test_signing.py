"""Standard Webhooks signatures: made by functions.webhooks.signing, verified by the stock `standardwebhooks`."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from functions.webhooks.signing import SecretError, SigningKeys, generate_secret
from sns_webhook.standard import WebhookSignatureError, verify_delivery

BODY = b'{"event_id":"evt_0123","event_type":"upscale.succeeded","job_id":"j1"}'


def _headers(keys: SigningKeys, body: bytes = BODY, msg_id: str = "evt_0123") -> dict[str, str]:
    return keys.headers(msg_id, int(time.time()), body)


def test_the_stock_library_verifies_our_signature() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    headers = _headers(SigningKeys.parse(secret))
    assert Webhook(secret).verify(BODY, headers) == {"event_id": "evt_0123", "event_type": "upscale.succeeded",
                                                     "job_id": "j1"}
    assert headers["webhook-id"] == "evt_0123" and headers["webhook-signature"].startswith("v1,")


def test_a_changed_body_id_or_timestamp_or_another_secret_fails() -> None:
    secret = generate_secret()
    headers = _headers(SigningKeys.parse(secret))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"j1", b"j2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "evt_other"})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)})
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_during_a_rotation_every_delivery_verifies_with_the_old_and_with_the_new_secret() -> None:
    old, new = generate_secret(), generate_secret()
    headers = _headers(SigningKeys.parse(f"{new} {old}"))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_the_secret_secrets_manager_generates_is_read_as_base64_without_the_prefix() -> None:
    generated = "Ab3dEf6hIj9kLmN0pQr5tUv8xYz1aB4dE7gH0jK3mN6p"  # 44 alphanumerics, as the stack asks for
    headers = _headers(SigningKeys.parse(generated))
    Webhook(generated).verify(BODY, headers)  # receivers may use the value as it is...
    Webhook("whsec_" + generated).verify(BODY, headers)  # ...or with the prefix


@pytest.mark.parametrize("value", ["", "   ", "whsec_not*base64!", "whsec_" + base64.b64encode(b"short").decode(),
                                   "whsec_" + base64.b64encode(bytes(65)).decode()])
def test_a_broken_secret_is_refused_without_showing_it(value: str) -> None:
    with pytest.raises(SecretError) as raised:
        SigningKeys.parse(value)
    assert value.strip() == "" or value not in str(raised.value)


def test_the_receiver_helper_accepts_either_secret_and_returns_the_dedupe_id() -> None:
    old, new = generate_secret(), generate_secret()
    headers = {k.upper(): v for k, v in _headers(SigningKeys.parse(old)).items()}  # header names in any case
    verified = verify_delivery(BODY, headers, [new, old])
    assert verified.webhook_id == "evt_0123" == verified.payload["event_id"]
    with pytest.raises(WebhookSignatureError):
        verify_delivery(BODY, headers, [new])
    with pytest.raises(TypeError):
        verify_delivery(BODY, headers, old)  # one string is not a list of secrets


def test_the_receiver_helper_refuses_a_body_whose_event_id_is_not_the_webhook_id() -> None:
    secret = generate_secret()
    headers = _headers(SigningKeys.parse(secret), msg_id="evt_9999")  # validly signed, but ids differ
    with pytest.raises(WebhookSignatureError, match="webhook-id"):
        verify_delivery(BODY, headers, [secret])
