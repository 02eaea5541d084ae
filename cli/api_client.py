"""A small client of the HTTP API (docs/api.md): SigV4-signed JSON requests and the presigned upload.

Credentials come from botocore's usual chain (environment, profile, SSO, instance role); the signature is
botocore's own SigV4 for the `execute-api` service, which API Gateway's IAM authorization checks.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from urllib3 import encode_multipart_formdata

TIMEOUT_SECONDS = 30
UPLOAD_CHUNK = 256 * 1024


class ApiError(RuntimeError):
    """The API answered with a problem (RFC 9457): its code and sentence, or what went wrong on the way."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{detail} ({code}, HTTP {status})" if code else f"{detail} (HTTP {status})")
        self.status, self.code, self.detail = status, code, detail


class ApiClient:
    def __init__(self, base_url: str, *, region: str, credentials: Credentials,
                 session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._region = region
        self._credentials = credentials
        self._http = session or requests.Session()

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        data = json.dumps(body).encode() if body is not None else b""
        signed = AWSRequest(method=method, url=url, data=data,
                            headers={"Content-Type": "application/json"} if data else {})
        SigV4Auth(self._credentials, "execute-api", self._region).add_auth(signed)
        try:
            response = self._http.request(method, url, data=data or None, headers=dict(signed.headers.items()),
                                          timeout=TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            raise ApiError(0, "", f"cannot reach {urlsplit(url).netloc}: {exc}") from exc
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if not response.ok:
            detail = payload.get("detail") or payload.get("message") or response.reason
            raise ApiError(response.status_code, str(payload.get("code", "")), str(detail))
        return dict(payload)

    def upload(self, form: Mapping[str, Any], path: Path, progress: Callable[[int, int], None]) -> None:
        """POST the file to its presigned form (fields first, the file last), reporting (bytes sent, total)."""
        fields: list[tuple[str, Any]] = [*dict(form["fields"]).items(), ("file", (path.name, path.read_bytes()))]
        body, content_type = encode_multipart_formdata(fields)
        reader = _ProgressReader(io.BytesIO(body), len(body), progress)
        try:
            response = self._http.post(str(form["url"]), data=reader, timeout=TIMEOUT_SECONDS * 10,
                                       headers={"Content-Type": content_type, "Content-Length": str(len(body))})
        except requests.RequestException as exc:
            raise ApiError(0, "", f"the upload failed: {exc}") from exc
        if not response.ok:
            code = _xml_field(response.text, "Code")
            raise ApiError(response.status_code, code,
                           f"the upload was refused: {_xml_field(response.text, 'Message')}")

    def download(self, url: str, target: Path, progress: Callable[[int, int | None], None]) -> None:
        with self._http.get(url, stream=True, timeout=TIMEOUT_SECONDS) as response:
            if not response.ok:
                raise ApiError(response.status_code, "", "the result could not be downloaded")
            total = int(response.headers["Content-Length"]) if "Content-Length" in response.headers else None
            done = 0
            with target.open("wb") as out:
                for chunk in response.iter_content(UPLOAD_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    progress(done, total)


class _ProgressReader:
    """A body that reports how much of it was sent (http.client reads a file-like body in blocks)."""

    def __init__(self, handle: IO[bytes], size: int, progress: Callable[[int, int], None]) -> None:
        self._handle, self._size, self._progress = handle, size, progress
        self._done = 0

    def __len__(self) -> int:
        return self._size

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._done += len(data)
        self._progress(self._done, self._size)
        return data


def _xml_field(text: str, name: str) -> str:
    start, end = text.find(f"<{name}>"), text.find(f"</{name}>")
    return text[start + len(name) + 2:end] if 0 <= start < end else text[:200]
