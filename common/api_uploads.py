"""Uploads made through the HTTP API: where a job's upload lands, and how intake knows it is that job's.

`POST /v1/jobs` creates the job record (AWAITING_UPLOAD) and a presigned POST for exactly one key,
`<upload prefix>api/<job id>/<file name>`, with the job id bound into the signed policy as user metadata
(`x-amz-meta-job-id`). Intake treats an upload as the API job's only when both agree and the record names
that key; anything else in the bucket is an ordinary upload.
"""

from __future__ import annotations

import re
import unicodedata
import uuid

from common.keys import fit_key
from common.settings import Settings

API_FOLDER = "api/"  # below the upload prefix
JOB_ID_METADATA = "job-id"  # x-amz-meta-job-id, as boto3 returns user metadata (no prefix, lower case)
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"  # an API job id, and the shape of every job id (common.jobs.job_id_for)
DEFAULT_FILENAME = "upload"
_UNSAFE = re.compile(r"[^\w.\- ]+")  # letters of any script, digits, _ . - and space stay


def new_job_id() -> str:
    return uuid.uuid4().hex


def safe_filename(name: str) -> str:
    """The last path segment of `name`, with control and punctuation characters (other than . - _) replaced."""
    base = re.split(r"[/\\]", unicodedata.normalize("NFC", name))[-1]
    base = " ".join(_UNSAFE.sub("_", base).split())
    return base if base.strip(".") else DEFAULT_FILENAME


def upload_key(job_id: str, filename: str, settings: Settings) -> str:
    """The one key a job's presigned POST may write (shortened by `fit_key` when very long)."""
    return fit_key(f"{settings.upload_prefix}{API_FOLDER}{job_id}/", safe_filename(filename))


def job_id_in_key(key: str, settings: Settings) -> str | None:
    """The job id an API upload key names, or None for any other key."""
    prefix = settings.upload_prefix + API_FOLDER
    if not key.startswith(prefix):
        return None
    job_id, slash, name = key[len(prefix):].partition("/")
    return job_id if slash and name and re.fullmatch(JOB_ID_PATTERN, job_id) else None
