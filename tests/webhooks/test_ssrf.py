"""The SSRF rules at delivery: each refused class (docs/webhooks.md's table names these tests).

Refusals go through `deliver` with a recording sender that must never be called; redirects and oversized
answers through the real sender against real local servers; DNS through a fake resolver.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from hook_server import HookServer, Received, tls_identity
from recording_sender import RecordingSender

from common.settings import Settings, SettingsError
from common.webhook_urls import UrlRules, parse_networks
from functions.webhooks.delivery import Verdict, deliver
from functions.webhooks.sender import MAX_RESPONSE_BYTES, HttpRequest, PinnedSender, SendFailed
from functions.webhooks.signing import SigningKeys, generate_secret

KEYS = SigningKeys.parse(generate_secret())
BODY = '{"event_id":"evt_1","event_type":"upscale.succeeded","job_id":"j1"}'
NOW = 1_700_000_000.0
CLOUD = UrlRules.from_settings(Settings())  # as deployed: https only, no loopback
LOCAL = UrlRules(allow_local=True)  # the local stack: http and 127.0.0.1 (to reach the test servers)
TEN_MB = 10 * 1024 * 1024


def resolver(answers: dict[str, list[str]], calls: list[str] | None = None):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in answers:
            raise OSError("NXDOMAIN")
        return answers[host]
    return resolve


PUBLIC_DNS = resolver({"hooks.example.com": ["93.184.216.34"], "internal.example.com": ["10.0.0.5"],
                       "mixed.example.com": ["93.184.216.34", "192.168.1.20"]})


def _deliver(url: str, *, rules: UrlRules = CLOUD, resolve=PUBLIC_DNS, send=None):  # type: ignore[no-untyped-def]
    sender = send if send is not None else RecordingSender()
    attempt = deliver(BODY, {"webhook_url": url}, KEYS, sender, rules=rules, now=NOW, resolve=resolve)
    return attempt, sender


def _refused(url: str, **kwargs) -> str:  # type: ignore[no-untyped-def]
    attempt, sender = _deliver(url, **kwargs)
    assert attempt.verdict is Verdict.PERMANENT, attempt
    assert sender.requests == []  # nothing was sent anywhere
    return attempt.detail


def test_loopback_ipv4_is_refused() -> None:
    assert "private, loopback" in _refused("https://127.0.0.1/hook")


def test_loopback_ipv6_is_refused() -> None:
    _refused("https://[::1]/hook")
    _refused("https://[::ffff:127.0.0.1]/hook")  # IPv4 loopback written as IPv6


def test_private_10_8_is_refused() -> None:
    _refused("https://10.1.2.3/hook")


def test_instance_metadata_is_refused() -> None:
    _refused("https://169.254.169.254/latest/meta-data/")
    _refused("https://[fd00:ec2::254]/latest/meta-data/")


def test_this_vpcs_cidr_is_refused() -> None:
    vpc = UrlRules.from_settings(Settings(webhook_blocked_cidrs="93.184.0.0/16, 10.42.0.0/16"))
    assert vpc.extra_blocked == parse_networks(["93.184.0.0/16", "10.42.0.0/16"])
    _refused("https://hooks.example.com/hook", rules=vpc)  # a public address, but inside this VPC's range


def test_a_dns_name_resolving_to_a_private_address_is_refused() -> None:
    assert "internal.example.com resolves to 10.0.0.5" in _refused("https://internal.example.com/hook")
    _refused("https://mixed.example.com/hook")  # one private answer among public ones is enough


def test_dns_is_resolved_once_and_the_connection_goes_to_the_checked_address() -> None:
    """DNS rebinding: a second lookup would answer 127.0.0.1; there is none, and the sender gets the first."""
    calls: list[str] = []
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    attempt, sender = _deliver("https://hooks.example.com/hook", resolve=rebinding)
    assert attempt.verdict is Verdict.DELIVERED
    assert calls == ["hooks.example.com"]
    assert [r.addresses for r in sender.requests] == [("93.184.216.34",)]


def test_an_unresolvable_host_is_retried_not_refused_for_good() -> None:
    attempt, sender = _deliver("https://gone.example.com/hook")
    assert attempt.verdict is Verdict.RETRY and sender.requests == []


def test_http_is_refused_in_the_cloud_config() -> None:
    assert "must use https" in _refused("http://hooks.example.com/hook")
    _refused("http://127.0.0.1:8000/hook")  # loopback over http: refused twice over
    with pytest.raises(SettingsError, match="local stack only"):
        Settings(webhook_allow_local=True).check()  # only beside an emulator endpoint
    from infra.config import ConfigError, config_from_context

    with pytest.raises(ConfigError, match="decided by the stack"):
        config_from_context({"upscaler:webhook_allow_local": "true"})


@pytest.fixture
def internal() -> Iterator[HookServer]:
    """Stands for a service inside the network: no request may ever reach it."""
    with HookServer() as server:
        yield server


def test_a_redirect_to_a_private_address_is_not_followed(internal: HookServer) -> None:
    for target in ("http://169.254.169.254/latest/meta-data/", internal.url("/admin")):
        def redirect(_: Received, to: str = target) -> tuple[int, dict[str, str], list[bytes]]:
            return 302, {"Location": to}, []

        with HookServer(redirect) as receiver:
            attempt, _ = _deliver(receiver.url(), rules=LOCAL, send=PinnedSender())
            assert (attempt.verdict, attempt.status) == (Verdict.PERMANENT, 302)
            assert "redirects are not followed" in attempt.detail
            assert len(receiver.requests) == 1
    assert internal.requests == []


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_10_mb_response_is_not_read(declared: bool) -> None:
    def huge(_: Received) -> tuple[int, dict[str, str], Iterator[bytes]]:
        headers = {"Content-Length": str(TEN_MB)} if declared else {"Transfer-Encoding": "chunked"}
        block = b"x" * 65_536

        def chunks() -> Iterator[bytes]:
            for _ in range(TEN_MB // len(block)):
                yield block if declared else b"%x\r\n%s\r\n" % (len(block), block)
            if not declared:
                yield b"0\r\n\r\n"
        return 200, headers, chunks()

    with HookServer(huge) as receiver:
        url = receiver.url()
        response = PinnedSender()(HttpRequest(url=url, addresses=("127.0.0.1",), headers={}, body=b"{}"))
        assert response.oversized and len(response.body) <= MAX_RESPONSE_BYTES
        attempt, _ = _deliver(url, rules=LOCAL, send=PinnedSender())
        assert attempt.verdict is Verdict.PERMANENT and "size cap" in attempt.detail


def test_https_names_the_urls_host_while_connecting_to_the_checked_address() -> None:
    server_tls, client_tls = tls_identity("hooks.test")
    names: list[str | None] = []

    def record_sni(sock: object, name: str | None, context: object) -> None:
        names.append(name)

    server_tls.sni_callback = record_sni  # type: ignore[assignment]
    with HookServer(tls=server_tls) as receiver:
        sender = PinnedSender(ssl_context=client_tls)
        only_local = resolver({"hooks.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        attempt, _ = _deliver(receiver.url(host="hooks.test"), rules=LOCAL, resolve=only_local, send=sender)
        assert attempt.verdict is Verdict.DELIVERED, attempt
        assert names == ["hooks.test"]
        [received] = receiver.requests
        assert received.headers["host"] == f"hooks.test:{receiver.port}"
        # The certificate is checked against the URL's host, not the address connected to.
        attempt, _ = _deliver(receiver.url(host="other.test"), rules=LOCAL, resolve=only_local, send=sender)
        assert attempt.verdict is Verdict.RETRY and "CERTIFICATE_VERIFY_FAILED" in attempt.detail


def test_a_receiver_that_never_answers_times_out() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel's backlog), never answers
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        with pytest.raises(SendFailed, match="timed out"):  # the deadline ends it, not the receiver
            PinnedSender(total_timeout=0.5)(HttpRequest(url=url, addresses=("127.0.0.1",), headers={}, body=b"{}"))
    finally:
        stop.set()
        thread.join(5)
        for sock in accepted:
            sock.close()
        listener.close()


def test_a_name_server_that_never_answers_is_given_up_on_and_retried_later() -> None:
    from functions.webhooks.sender import resolver_with_deadline

    release = threading.Event()

    def hanging(host: str, port: int) -> list[str]:
        release.wait(30)
        return ["93.184.216.34"]

    try:
        attempt, sender = _deliver("https://slow.example.com/hook", resolve=resolver_with_deadline(hanging, 0.2))
    finally:
        release.set()
    assert attempt.verdict is Verdict.RETRY and "timed out" in attempt.detail and sender.requests == []
    assert resolver_with_deadline(PUBLIC_DNS)("hooks.example.com", 443) == ["93.184.216.34"]
    with pytest.raises(OSError, match="NXDOMAIN"):
        resolver_with_deadline(PUBLIC_DNS)("gone.example.com", 443)
