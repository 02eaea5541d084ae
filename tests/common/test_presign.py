"""Result links: a URL signed with temporary credentials says (and is signed for) its real lifetime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.credentials import CredentialProvider, RefreshableCredentials

from common.presign import TASK_ROLE_CREDENTIAL_SECONDS, presign_get

BUCKET, KEY, VERSION = "out-bucket", "outputs/a/photo.jpg", "v3HL4kq"


class _TemporaryCredentials(CredentialProvider):
    """What a Batch job sees: role credentials from the ECS endpoint that expire and are refreshed."""

    METHOD = "container-role"

    def __init__(self, lifetimes: list[timedelta]) -> None:
        super().__init__()
        self._lifetimes = lifetimes
        self.fetches = 0

    def _fetch(self) -> dict[str, str]:
        lifetime = self._lifetimes[min(self.fetches, len(self._lifetimes) - 1)]
        self.fetches += 1
        expiry = datetime.now(UTC) + lifetime
        return {"access_key": f"ASIA{self.fetches:016d}", "secret_key": "secret", "token": "session-token",
                "expiry_time": expiry.isoformat()}

    def load(self) -> RefreshableCredentials:
        return RefreshableCredentials.create_from_metadata(metadata=self._fetch(), refresh_using=self._fetch,
                                                           method=self.METHOD)


def _s3(provider: CredentialProvider | None = None) -> Any:
    session = botocore.session.Session()
    if provider is not None:
        session.get_component("credential_provider").providers.insert(0, provider)
    else:
        session.set_credentials("AKIDEXAMPLE", "secret")
    return boto3.session.Session(botocore_session=session).client(
        "s3", region_name="us-east-1", config=Config(signature_version="s3v4"))


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_long_term_credentials_get_the_requested_lifetime() -> None:
    now = datetime.now(UTC)
    link = presign_get(_s3(), bucket=BUCKET, key=KEY, version=VERSION, expires_in=86_400, now=now)
    query = _query(link.url)
    assert query["X-Amz-Expires"] == ["86400"]
    assert query["versionId"] == [VERSION]
    assert link.expires_at == link.requested_expires_at == now + timedelta(days=1)
    assert not link.shortened and link.warning() is None


def test_a_link_never_outlives_the_temporary_credentials_that_signed_it() -> None:
    provider = _TemporaryCredentials([timedelta(hours=2)])
    now = datetime.now(UTC)
    link = presign_get(_s3(provider), bucket=BUCKET, key=KEY, version=None, expires_in=TASK_ROLE_CREDENTIAL_SECONDS,
                       now=now)
    signed_for = int(_query(link.url)["X-Amz-Expires"][0])
    assert 7200 - 60 <= signed_for <= 7200  # the URL itself claims no more than the credentials give
    assert link.expires_at == now + timedelta(seconds=signed_for)
    assert link.requested_expires_at == now + timedelta(hours=6)
    assert link.shortened
    warning = link.warning()
    assert warning is not None
    assert "temporary credentials" in warning and "4 h" in warning  # 6 h asked, ~2 h given
    assert link.expires_at.strftime("%Y-%m-%dT%H:%M") in warning
    assert "versionId" not in _query(link.url)


def test_credentials_about_to_expire_are_refreshed_before_signing() -> None:
    """botocore refreshes credentials inside its refresh window; the link is bounded by the new set."""
    provider = _TemporaryCredentials([timedelta(minutes=5), timedelta(hours=6)])
    link = presign_get(_s3(provider), bucket=BUCKET, key=KEY, version=VERSION, expires_in=3600,
                       now=datetime.now(UTC))
    assert provider.fetches == 2
    assert _query(link.url)["X-Amz-Expires"] == ["3600"]
    assert _query(link.url)["X-Amz-Security-Token"] == ["session-token"]
    assert not link.shortened


def test_naive_now_is_taken_as_utc() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5)
    link = presign_get(_s3(), bucket=BUCKET, key=KEY, version=None, expires_in=60, now=naive)
    assert link.expires_at == datetime(2026, 1, 2, 3, 5, 5, tzinfo=UTC)


@pytest.mark.parametrize("expires_in", [0, 604_801])
def test_lifetimes_s3_cannot_sign_are_refused(expires_in: int) -> None:
    with pytest.raises(ValueError, match="expires_in must be within"):
        presign_get(_s3(), bucket=BUCKET, key=KEY, version=None, expires_in=expires_in, now=datetime.now(UTC))


def test_a_client_without_a_signer_is_treated_as_long_term() -> None:
    calls: list[tuple[str, dict[str, Any] | None, int]] = []

    class FakeS3:
        def generate_presigned_url(self, ClientMethod: str, Params: dict[str, Any] | None = None,
                                   ExpiresIn: int = 3600) -> str:
            calls.append((ClientMethod, Params, ExpiresIn))
            return "https://signed.example/"

    link = presign_get(FakeS3(), bucket=BUCKET, key=KEY, version=VERSION, expires_in=120, now=datetime.now(UTC))
    assert link.url == "https://signed.example/" and not link.shortened
    assert calls == [("get_object", {"Bucket": BUCKET, "Key": KEY, "VersionId": VERSION}, 120)]
