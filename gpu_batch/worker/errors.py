"""Which failures are worth another Batch attempt and which never will succeed."""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from common.contract import FailureCode

# S3/DynamoDB/SNS error codes that mean "try again later", beyond any 5xx status.
_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
    "ProvisionedThroughputExceededException", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "InternalFailure", "ServiceUnavailable", "TooManyRequestsException",
})
_MISSING_INPUT_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound"})


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failure: what to tell the client and whether Batch should retry."""

    code: FailureCode
    message: str
    retryable: bool


class JobInterrupted(BaseException):  # BaseException: `except Exception` must not swallow it
    """Batch sent SIGTERM (timeout, termination, spot reclaim): stop without a terminal write."""


class InputMissingError(Exception):
    """The input object (or the pinned version) no longer exists."""


def classify_storage_error(exc: Exception, *, action: str) -> Failure:
    """An S3 (or other AWS) error while `action` (e.g. "downloading the input")."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        detail = f"{action}: {code or status} {error.get('Message', '')}".strip()
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return Failure(FailureCode.STORAGE_ERROR, detail, retryable=True)
        return Failure(FailureCode.STORAGE_ERROR, detail, retryable=False)
    if isinstance(exc, ConnectionError | HTTPClientError | TimeoutError | OSError):
        return Failure(FailureCode.STORAGE_ERROR, f"{action}: {type(exc).__name__}: {exc}", retryable=True)
    return Failure(FailureCode.INTERNAL_ERROR, f"{action}: {type(exc).__name__}: {exc}", retryable=False)


def is_missing_object(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in _MISSING_INPUT_CODES
