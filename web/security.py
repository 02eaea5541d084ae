"""The page's files and the headers it is served with, the same locally (local_stack.api_server) and on
CloudFront (infra.constructs.static_site): a strict Content-Security-Policy that lets the page reach only its
own origin, the API and the buckets it uploads to and shows results from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

WEB_ROOT = Path(__file__).resolve().parent
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "sigv4.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
CONFIG_FILE = "config.json"  # written beside the page: where the API is and how to sign in (app.js reads it)
REFERRER_POLICY = "no-referrer"  # presigned URLs must not leak through Referer
HSTS_SECONDS = 2 * 365 * 24 * 3600  # CloudFront only (https)


def content_security_policy(*, connect: Sequence[str], images: Sequence[str]) -> str:
    """No inline code, no plug-ins, no framing; fetch/XHR to `connect`, images from the page, blobs and `images`."""
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        " ".join(["img-src 'self' blob: data:", *images]),
        " ".join(["connect-src", *connect]),
        "form-action 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ])


def security_headers(*, connect: Sequence[str], images: Sequence[str]) -> dict[str, str]:
    """Every header the page is served with, except HSTS (CloudFront adds it: it serves https only)."""
    return {
        "Content-Security-Policy": content_security_policy(connect=connect, images=images),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": REFERRER_POLICY,
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }
