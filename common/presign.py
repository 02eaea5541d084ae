"""Presigned GET links for results, and when they really stop working.

S3 honours a SigV4-presigned URL until the earlier of its X-Amz-Expires and the expiry of the
credentials that signed it. On AWS the worker signs with its Batch job role's temporary credentials
(ECS task-role credentials: they live at most TASK_ROLE_CREDENTIAL_SECONDS and ECS rotates them), so a
link can die before the configured lifetime. `presign_get` signs for no longer than the credentials can
honour and reports that real end, with a sentence for the notification when it falls short.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

# ECS hands a task (a Batch job) role credentials that expire after at most 6 hours. The deployment
# config refuses a longer presigned_url_expiry_seconds: such a promise could never be kept.
TASK_ROLE_CREDENTIAL_SECONDS = 6 * 3600
SIGV4_MAX_SECONDS = 7 * 24 * 3600  # S3's ceiling for X-Amz-Expires


class S3Presigner(Protocol):
    """The one boto3 S3 client method this module calls."""

    def generate_presigned_url(self, ClientMethod: str, Params: dict[str, Any] | None = None,
                               ExpiresIn: int = 3600) -> str: ...


@dataclass(frozen=True, slots=True)
class PresignedLink:
    url: str
    expires_at: datetime  # when S3 stops honouring `url`: the earlier of the request and the credentials
    requested_expires_at: datetime  # what presigned_url_expiry_seconds asked for

    @property
    def shortened(self) -> bool:
        return self.expires_at < self.requested_expires_at

    def warning(self) -> str | None:
        """A sentence for the notification's warnings when the link ends before the configured lifetime."""
        if not self.shortened:
            return None
        short_by = self.requested_expires_at - self.expires_at
        return (f"the download link expires at {_iso(self.expires_at)}, {_duration(short_by)} before the "
                "configured lifetime: it is signed with the job role's temporary credentials, which end then")


def presign_get(s3: S3Presigner, *, bucket: str, key: str, version: str | None, expires_in: int,
                now: datetime) -> PresignedLink:
    """A GET URL for `key` (pinned to `version`) valid for `expires_in` seconds, or less when the
    signing credentials expire sooner; `expires_at` is then the credentials' expiry."""
    if not 1 <= expires_in <= SIGV4_MAX_SECONDS:
        raise ValueError(f"expires_in must be within 1..{SIGV4_MAX_SECONDS} seconds, got {expires_in}")
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    lifetime = expires_in
    credentials_end = credential_expiry(s3)
    if credentials_end is not None:
        lifetime = max(1, min(expires_in, int((credentials_end - now).total_seconds())))
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version:
        params["VersionId"] = version
    url = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=lifetime)
    return PresignedLink(url=url, expires_at=now + timedelta(seconds=lifetime),
                         requested_expires_at=now + timedelta(seconds=expires_in))


def credential_expiry(client: object) -> datetime | None:
    """When the credentials that sign `client`'s requests expire; None for long-term credentials.

    botocore exposes no public accessor: this reads the client's signer. Asking for the frozen
    credentials first makes botocore refresh ones that are about to expire (its own refresh window),
    so the link is signed with, and bounded by, the newest credentials available.
    """
    credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    if credentials is None:
        return None
    freeze = getattr(credentials, "get_frozen_credentials", None)
    if callable(freeze):
        freeze()
    expiry = getattr(credentials, "_expiry_time", None)  # RefreshableCredentials only
    if not isinstance(expiry, datetime):
        return None
    return expiry if expiry.tzinfo else expiry.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _duration(delta: timedelta) -> str:
    minutes = max(1, round(delta.total_seconds() / 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
