"""Which per-request webhook URLs may ever be delivered to: the SSRF rules, as pure functions.

A webhook URL comes from whoever calls the API, so it is hostile until proven otherwise: it must not reach
this account's network, the instance metadata service, or loopback. The API refuses a URL that can never be
delivered when the job is created (`refusal`); the delivery function checks again, on the addresses DNS gives
it at delivery time, and connects to exactly the address it checked (DNS rebinding). `UrlRules` holds the
deployment's choices (this VPC's ranges; http and loopback on the local stack only), read from Settings.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from common.settings import Settings

MAX_URL_LENGTH = 2048
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

# Never a webhook receiver: loopback, private (RFC 1918, unique local), link-local (169.254.0.0/16 holds the EC2
# instance metadata service and fd00:ec2::254 its IPv6 address), shared address space (100.64.0.0/10, carrier
# NAT and some AWS services), multicast, reserved and unspecified addresses, and the IPv6 forms that embed IPv4.
BLOCKED_NETWORKS: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10",
    "ff00::/8", "fd00:ec2::254/128",
))


class UnsafeWebhookUrl(ValueError):
    """The URL can never be delivered to (the message says why, for the API's caller)."""


class UnresolvableWebhookHost(UnsafeWebhookUrl):
    """The host has no address now: refused at job creation, retried at delivery (DNS may come back)."""


def blocked_address(address: str | Address, extra: Iterable[Network] = ()) -> bool:
    """True for an address no webhook may reach (BLOCKED_NETWORKS, and `extra`: e.g. this VPC's CIDRs)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in (*BLOCKED_NETWORKS, *extra) if ip.version == network.version)


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the host resolves to (A and AAAA), as DNS gives them now."""
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)})


def check_url(url: str, *, allow_http: bool = False, extra_blocked: Iterable[Network] = (),
              resolve: Resolver = system_resolver, allow_loopback: bool = False) -> list[str]:
    """The addresses `url` may be delivered to (all of them pass), or UnsafeWebhookUrl saying why not.

    `allow_http` and `allow_loopback` are for the local stack only, where receivers listen on 127.0.0.1."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl(f"the webhook URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhookUrl(f"the webhook URL is not a valid URL ({exc})") from exc
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise UnsafeWebhookUrl(f"the webhook URL must use {' or '.join(schemes)}, not {parts.scheme or 'nothing'!r}")
    if parts.username or parts.password:
        raise UnsafeWebhookUrl("the webhook URL must not carry a user name or password")
    host = parts.hostname
    if not host:
        raise UnsafeWebhookUrl("the webhook URL has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = list(resolve(host, port))
        except (OSError, UnicodeError) as exc:
            raise UnresolvableWebhookHost(f"the webhook host {host!r} does not resolve ({exc})") from exc
        if not addresses:
            raise UnresolvableWebhookHost(f"the webhook host {host!r} does not resolve")
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if allow_loopback and ip.is_loopback:
            continue
        if blocked_address(ip, extra_blocked):
            where = "" if literal is not None else f" ({host} resolves to {address})"
            raise UnsafeWebhookUrl(f"the webhook URL points to a private, loopback, link-local or metadata "
                                   f"address{where}; it must be a public address")
    return addresses


@dataclass(frozen=True, slots=True)
class UrlRules:
    """This deployment's rules: check_url with its extra blocked ranges, and http/loopback where allowed."""

    extra_blocked: tuple[Network, ...] = ()
    allow_local: bool = False  # the local stack: http:// and 127.0.0.1 (Settings refuses it elsewhere)

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlRules:
        return cls(extra_blocked=parse_networks(settings.webhook_blocked_cidrs.split(",")),
                   allow_local=settings.webhook_allow_local)

    def check(self, url: str, resolve: Resolver = system_resolver) -> list[str]:
        """check_url under these rules: the addresses `url` may be delivered to, IPv4 first (a Lambda outside
        a VPC has no IPv6 egress), or UnsafeWebhookUrl."""
        addresses = check_url(url, allow_http=self.allow_local, allow_loopback=self.allow_local,
                              extra_blocked=self.extra_blocked, resolve=resolve)
        return sorted(addresses, key=lambda a: ipaddress.ip_address(a).version)
