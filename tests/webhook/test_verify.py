"""sns_webhook: verify SNS signatures (v1 and v2) with a locally generated key and certificate."""

import contextlib
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sns_webhook.canonical import string_to_sign
from sns_webhook.confirm import confirm_subscription
from sns_webhook.sign import generate_signing_identity, sign_message
from sns_webhook.verify import (
    ANY_TOPIC,
    SIGNATURE_V2_ONLY,
    SNS_CERT_URL_PATTERN,
    SignatureError,
    verify_message,
)

CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000.pem"
TOPIC = "arn:aws:sns:us-east-1:123456789012:upscaler-events"


@pytest.fixture(scope="module")
def identity():
    return generate_signing_identity("sns.us-east-1.amazonaws.com")


@pytest.fixture(scope="module")
def other_identity():
    return generate_signing_identity("attacker.example")


@pytest.fixture
def fetched():
    return []


@pytest.fixture
def fetch_cert(identity, fetched):
    def fetch(url: str) -> bytes:
        fetched.append(url)
        return identity[1]

    return fetch


def _now_iso(delta=timedelta()):
    return (datetime.now(UTC) + delta).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notification(**overrides):
    message = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Subject": "upscale.succeeded",
        "Message": json.dumps({"event_type": "upscale.succeeded", "job_id": "abc"}),
        "Timestamp": _now_iso(),
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
        "MessageAttributes": {"event_type": {"Type": "String", "Value": "upscale.succeeded"}},
    }
    message.update(overrides)
    return message


def confirmation(**overrides):
    message = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic. To confirm, visit the SubscribeURL.",
        "SubscribeURL": f"https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336",
        "Timestamp": _now_iso(),
        "SigningCertURL": CERT_URL,
    }
    message.update(overrides)
    return message


@pytest.mark.parametrize("version", ["1", "2"])
def test_genuine_notification_verifies(identity, fetch_cert, fetched, version):
    signed = sign_message(notification(), identity[0], signature_version=version)
    assert signed["SignatureVersion"] == version
    verify_message(signed, fetch_cert=fetch_cert, topic_arns={TOPIC})
    assert fetched == [CERT_URL]


def test_message_without_subject_verifies(identity, fetch_cert):
    message = notification()
    del message["Subject"]
    verify_message(sign_message(message, identity[0]), topic_arns={TOPIC}, fetch_cert=fetch_cert)


@pytest.mark.parametrize("field, value", [
    ("Message", json.dumps({"event_type": "upscale.succeeded", "job_id": "someone-else"})),
    ("Subject", "upscale.failed"),
    ("Timestamp", _now_iso(timedelta(seconds=-1))),
    ("TopicArn", "arn:aws:sns:us-east-1:123456789012:other"),
])
def test_tampered_message_is_rejected(identity, fetch_cert, field, value):
    signed = sign_message(notification(), identity[0])
    signed[field] = value
    with pytest.raises(SignatureError, match="does not match"):  # a receiver that trusts both topics
        verify_message(signed, topic_arns={TOPIC, value}, fetch_cert=fetch_cert)


def test_signature_version_swap_is_rejected(identity, fetch_cert):
    signed = sign_message(notification(), identity[0], signature_version="1")
    signed["SignatureVersion"] = "2"  # a SHA1 signature presented as SHA256
    with pytest.raises(SignatureError, match="does not match"):
        verify_message(signed, topic_arns={TOPIC}, fetch_cert=fetch_cert)


def test_signed_by_another_key_is_rejected(other_identity, fetch_cert):
    signed = sign_message(notification(), other_identity[0])
    with pytest.raises(SignatureError, match="does not match"):
        verify_message(signed, topic_arns={TOPIC}, fetch_cert=fetch_cert)


@pytest.mark.parametrize("url", [
    "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
    "http://sns.us-east-1.amazonaws.com/cert.pem",
    "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
    "https://sns.us-east-1.amazonaws.com@evil.example/cert.pem",
    "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
    "https://s3.amazonaws.com/sns/cert.pem",
    "https://sns.us-east-1.amazonaws.com/cert.pem?x=1",
    "",
])
def test_certificate_from_untrusted_host_is_never_fetched(identity, fetch_cert, fetched, url):
    signed = sign_message(notification(SigningCertURL=url), identity[0])
    with pytest.raises(SignatureError, match="SigningCertURL"):
        verify_message(signed, topic_arns={TOPIC}, fetch_cert=fetch_cert)
    assert fetched == []


def test_custom_cert_url_pattern_trusts_the_local_stack(identity, fetch_cert):
    local_url = "http://127.0.0.1:4566/_local/sns-signing-cert.pem"
    signed = sign_message(notification(SigningCertURL=local_url), identity[0])
    with pytest.raises(SignatureError):
        verify_message(signed, topic_arns={TOPIC}, fetch_cert=fetch_cert)
    verify_message(signed, topic_arns={TOPIC}, fetch_cert=fetch_cert, cert_url_pattern=re.escape(local_url))


def test_default_pattern_accepts_china_and_other_regions():
    for url in ("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
                "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem"):
        assert re.fullmatch(SNS_CERT_URL_PATTERN, url)


def test_stale_message_is_rejected(identity, fetch_cert):
    signed = sign_message(notification(Timestamp=_now_iso(timedelta(hours=-2))), identity[0])
    with pytest.raises(SignatureError, match="stale"):
        verify_message(signed, topic_arns={TOPIC}, fetch_cert=fetch_cert)
    # the same message is fine for a receiver that tolerates older deliveries
    verify_message(signed, topic_arns={TOPIC}, fetch_cert=fetch_cert, max_age=timedelta(hours=3))


def test_future_timestamp_is_rejected(identity, fetch_cert):
    signed = sign_message(notification(Timestamp=_now_iso(timedelta(hours=1))), identity[0])
    with pytest.raises(SignatureError, match="future"):
        verify_message(signed, topic_arns={TOPIC}, fetch_cert=fetch_cert)


@pytest.mark.parametrize("mutate, match", [
    (lambda m: m.update(SignatureVersion="3"), "SignatureVersion"),
    (lambda m: m.update(Signature="not base64!"), "base64"),
    (lambda m: m.update(Signature=""), "Signature"),
    (lambda m: m.update(Type="Bogus"), "Type"),
    (lambda m: m.update(Timestamp="yesterday"), "ISO-8601"),
    (lambda m: m.pop("MessageId"), "lacks MessageId"),
])
def test_malformed_messages_are_rejected(identity, fetch_cert, mutate, match):
    signed = sign_message(notification(), identity[0])
    mutate(signed)
    with pytest.raises(SignatureError, match=match):
        verify_message(signed, topic_arns={TOPIC}, fetch_cert=fetch_cert)


def test_unexpected_topic_is_rejected(identity, fetch_cert):
    signed = sign_message(notification(), identity[0])
    with pytest.raises(SignatureError, match="unexpected topic"):
        verify_message(signed, fetch_cert=fetch_cert, topic_arns={"arn:aws:sns:us-east-1:1:mine"})


def test_garbage_certificate_is_rejected(identity):
    signed = sign_message(notification(), identity[0])
    with pytest.raises(SignatureError, match="PEM"):
        verify_message(signed, topic_arns={TOPIC}, fetch_cert=lambda url: b"<html>not a cert</html>")


def test_canonical_string_covers_the_signed_fields():
    text = string_to_sign(notification(Subject="s")).decode()
    assert text.startswith("Message\n") and "\nSubject\ns\n" in text and text.endswith("Type\nNotification\n")
    assert "SigningCertURL" not in text and "MessageAttributes" not in text


def test_confirm_subscription_verifies_then_opens_subscribe_url(identity, fetch_cert):
    opened = []
    signed = sign_message(confirmation(), identity[0], signature_version="1")
    body = confirm_subscription(signed, topic_arns={TOPIC}, fetch_cert=fetch_cert,
                                open_url=lambda url: opened.append(url) or b"<ConfirmSubscriptionResponse/>")
    assert opened == [signed["SubscribeURL"]]
    assert body == b"<ConfirmSubscriptionResponse/>"


def test_confirm_subscription_refuses_forged_or_foreign_confirmations(identity, other_identity, fetch_cert):
    opened = []

    def open_url(url):
        opened.append(url)
        return b""

    forged = sign_message(confirmation(), other_identity[0])
    with pytest.raises(SignatureError):
        confirm_subscription(forged, topic_arns={TOPIC}, fetch_cert=fetch_cert, open_url=open_url)
    elsewhere = sign_message(confirmation(SubscribeURL="https://evil.example/?Action=ConfirmSubscription"),
                             identity[0])
    with pytest.raises(ValueError, match="SubscribeURL"):
        confirm_subscription(elsewhere, topic_arns={TOPIC}, fetch_cert=fetch_cert, open_url=open_url)
    with pytest.raises(ValueError, match="SubscriptionConfirmation"):
        confirm_subscription(sign_message(notification(), identity[0]), topic_arns={TOPIC}, fetch_cert=fetch_cert,
                             open_url=open_url)
    assert opened == []


def test_sign_message_rejects_unknown_version(identity):
    with pytest.raises(ValueError, match="SignatureVersion"):
        sign_message(notification(), identity[0], signature_version="3")


# --- issue 11: the host rule, the topic allow-list, v2 only, malformed shapes ---------------------------


@pytest.mark.parametrize("host", [
    "sns.s3.amazonaws.com",  # virtual-hosted S3 bucket "sns"
    "sns.s3-external-1.amazonaws.com",  # legacy us-east-1 S3 endpoint (matches AWS SDKs' 3+ character rule)
    "sns.s3-us-west-2.amazonaws.com",  # legacy regional S3 endpoint
    "sns.s3-website-us-east-1.amazonaws.com",
    "sns.s3.dualstack.us-east-1.amazonaws.com",
    "sns.s3.us-east-1.amazonaws.com",
    "sns.s3.cn-north-1.amazonaws.com.cn",
    "sns.s3-accesspoint.us-east-1.amazonaws.com",
    "sns.amazonaws.com",
    "sns..amazonaws.com",
    "sns.US-EAST-1.amazonaws.com",
    "sns.us-east-1.amazonaws.com.cn.evil.example",
    "sns.us-east-1.amazonaws.co",
])
def test_s3_and_other_lookalike_hosts_are_refused(identity, fetch_cert, fetched, host):
    signed = sign_message(notification(SigningCertURL=f"https://{host}/SimpleNotificationService-abc.pem"),
                          identity[0])
    with pytest.raises(SignatureError, match="SigningCertURL"):
        verify_message(signed, topic_arns={TOPIC}, fetch_cert=fetch_cert)
    assert fetched == []
    opened = []
    confirm = sign_message(confirmation(SubscribeURL=f"https://{host}/?Action=ConfirmSubscription&Token=1"),
                           identity[0])
    with pytest.raises(ValueError, match="SubscribeURL"):
        confirm_subscription(confirm, topic_arns={TOPIC}, fetch_cert=lambda url: identity[1],
                             open_url=lambda url: opened.append(url) or b"")
    assert opened == []


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-2", "ap-southeast-4", "us-gov-west-1",
                                    "cn-northwest-1", "il-central-1", "us-isob-east-1", "eu-isoe-west-1"])
def test_every_region_shape_is_accepted(region):
    suffix = ".cn" if region.startswith("cn-") else ""
    assert re.fullmatch(SNS_CERT_URL_PATTERN,
                        f"https://sns.{region}.amazonaws.com{suffix}/SimpleNotificationService-01ab.pem")


def test_topic_allow_list_is_required_or_explicitly_waived(identity, fetch_cert):
    signed = sign_message(notification(), identity[0])
    with pytest.raises(TypeError, match="topic_arns"):
        verify_message(signed, fetch_cert=fetch_cert)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="topic_arns"):
        verify_message(signed, topic_arns=TOPIC, fetch_cert=fetch_cert)  # a str would match substrings
    with pytest.raises(SignatureError, match="unexpected topic"):
        verify_message(signed, topic_arns=set(), fetch_cert=fetch_cert)
    verify_message(signed, topic_arns=ANY_TOPIC, fetch_cert=fetch_cert)


def test_v2_only_receivers_refuse_sha1_signatures(identity, fetch_cert):
    v1 = sign_message(notification(), identity[0], signature_version="1")
    with pytest.raises(SignatureError, match="SignatureVersion"):
        verify_message(v1, topic_arns={TOPIC}, signature_versions=SIGNATURE_V2_ONLY, fetch_cert=fetch_cert)
    v2 = sign_message(notification(), identity[0], signature_version="2")
    verify_message(v2, topic_arns={TOPIC}, signature_versions=SIGNATURE_V2_ONLY, fetch_cert=fetch_cert)


@pytest.mark.parametrize("mutate", [
    lambda m: m.update(Type=["Notification"]),
    lambda m: m.update(Type={"a": 1}),
    lambda m: m.update(TopicArn=[TOPIC]),
    lambda m: m.update(SigningCertURL=12345),
    lambda m: m.update(SigningCertURL=["https://sns.us-east-1.amazonaws.com/a.pem"]),
    lambda m: m.update(SignatureVersion=2),
    lambda m: m.update(SignatureVersion=["2"]),
    lambda m: m.update(Signature=["abc"]),
    lambda m: m.update(Signature=None),
    lambda m: m.update(Timestamp=1_700_000_000),
    lambda m: m.pop("Timestamp"),
    lambda m: m.update(Message={"event_type": "upscale.succeeded"}),
    lambda m: m.update(MessageId=None),
    lambda m: m.update(Subject=["s"]),
    lambda m: m.update(Signature="\u00e9t\u00e9"),  # not ASCII
    lambda m: m.pop("SigningCertURL"),
])
def test_malformed_shapes_raise_the_verifiers_own_error(identity, fetch_cert, mutate):
    signed = sign_message(notification(), identity[0])
    mutate(signed)
    with pytest.raises(SignatureError):
        verify_message(signed, topic_arns={TOPIC}, fetch_cert=fetch_cert)


@pytest.mark.parametrize("body", [[], ["Notification"], "Notification", 42, None, True])
def test_a_body_that_is_not_a_json_object_is_refused(fetch_cert, body):
    with pytest.raises(SignatureError, match="JSON object"):
        verify_message(body, topic_arns={TOPIC}, fetch_cert=fetch_cert)
    with pytest.raises(SignatureError, match="JSON object"):
        confirm_subscription(body, topic_arns={TOPIC}, fetch_cert=fetch_cert, open_url=lambda url: b"")


def test_confirmation_with_a_list_for_subscribe_url_is_refused(identity, fetch_cert):
    signed = sign_message(confirmation(), identity[0])
    signed["SubscribeURL"] = [signed["SubscribeURL"]]
    with pytest.raises(SignatureError, match="SubscribeURL"):
        confirm_subscription(signed, topic_arns={TOPIC}, fetch_cert=fetch_cert, open_url=lambda url: b"")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


_SIGNED: list[dict] = []


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(field=st.sampled_from([*sorted(notification()), "SignatureVersion", "Signature"]), value=_json,
       body=_json)
def test_any_json_shape_raises_only_signature_error(identity, field, value, body):
    if not _SIGNED:  # signing loads the private key: once, not per example
        _SIGNED.append(sign_message(notification(), identity[0]))
    signed = {**_SIGNED[0], field: value}
    for message in (signed, body):
        with contextlib.suppress(SignatureError):  # anything else fails the test
            verify_message(message, topic_arns={TOPIC}, fetch_cert=lambda url: identity[1])
