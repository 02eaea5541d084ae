"""The SSRF rules for per-request webhook URLs (common.webhook_urls): each refused class, and what passes."""

from __future__ import annotations

import pytest

from common.webhook_urls import UnsafeWebhookUrl, blocked_address, check_url, parse_networks


def resolver(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError("NXDOMAIN")
        return answers[host]
    return resolve


PUBLIC = resolver({"hooks.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
                   "sneaky.example.com": ["93.184.216.34", "10.0.0.5"],
                   "meta.example.com": ["169.254.169.254"]})


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hook", "https://[::1]/hook", "https://10.1.2.3/hook", "https://172.16.0.1/",
    "https://192.168.1.1/", "https://169.254.169.254/latest/meta-data/", "https://[fd00:ec2::254]/",
    "https://[::ffff:127.0.0.1]/", "https://100.64.0.1/", "https://0.0.0.0/", "https://[fe80::1]/",
    "https://sneaky.example.com/hook", "https://meta.example.com/", "https://nowhere.example.com/",
    "http://hooks.example.com/hook", "ftp://hooks.example.com/", "https://user:pw@hooks.example.com/",
    "https:///nohost", "https://hooks.example.com:99999/", "https://hooks.example.com/" + "a" * 3000,
])
def test_refused(url: str) -> None:
    with pytest.raises(UnsafeWebhookUrl):
        check_url(url, resolve=PUBLIC)


def test_a_public_https_url_passes_with_every_address_it_resolves_to() -> None:
    assert check_url("https://hooks.example.com/hook", resolve=PUBLIC) == [
        "93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]


def test_this_vpc_is_refused_too_and_the_local_stack_may_use_http_on_loopback() -> None:
    vpc = parse_networks(["93.184.0.0/16"])
    with pytest.raises(UnsafeWebhookUrl, match="public address"):
        check_url("https://hooks.example.com/", resolve=PUBLIC, extra_blocked=vpc)
    assert check_url("http://127.0.0.1:9000/hook", allow_http=True, allow_loopback=True) == ["127.0.0.1"]
    assert blocked_address("::ffff:169.254.169.254") and not blocked_address("8.8.8.8")
