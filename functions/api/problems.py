"""RFC 9457 problem details: every error the API returns, with a stable `code` and a sentence for a person.

Codes are intake's (common.contract.RejectionCode: the same refusals with the same sentences) or the API's own
(ApiErrorCode). Intake's refusals of a request's content are 422; a malformed request is 400.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from common.contract import RejectionCode

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:upscaler:problem:"  # + code; docs/api.md lists them


class ApiErrorCode(enum.StrEnum):
    INVALID_REQUEST = "INVALID_REQUEST"  # not JSON, or not the documented shape
    BODY_TOO_LARGE = "BODY_TOO_LARGE"
    INVALID_WEBHOOK_URL = "INVALID_WEBHOOK_URL"  # can never be delivered to (common.webhook_urls)
    INVALID_CURSOR = "INVALID_CURSOR"
    UNAUTHENTICATED = "UNAUTHENTICATED"  # no caller identity on the request
    NOT_FOUND = "NOT_FOUND"  # no such job, or not the caller's (the same answer: existence is not leaked)
    NOT_CANCELLABLE = "NOT_CANCELLABLE"  # a worker has it, or it has ended
    INTERNAL_ERROR = "INTERNAL_ERROR"


_TITLES = {
    ApiErrorCode.INVALID_REQUEST: "The request is not valid",
    ApiErrorCode.BODY_TOO_LARGE: "The request body is too large",
    ApiErrorCode.INVALID_WEBHOOK_URL: "The webhook URL cannot be delivered to",
    ApiErrorCode.INVALID_CURSOR: "The cursor is not valid",
    ApiErrorCode.UNAUTHENTICATED: "The caller is not identified",
    ApiErrorCode.NOT_FOUND: "No such job",
    ApiErrorCode.NOT_CANCELLABLE: "The job can no longer be cancelled",
    ApiErrorCode.INTERNAL_ERROR: "Something went wrong on our side",
}


class ApiProblem(Exception):
    """Raised by the API's logic; the handler turns it into a problem+json response."""

    def __init__(self, status: int, code: ApiErrorCode | RejectionCode, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra

    @property
    def title(self) -> str:
        if isinstance(self.code, ApiErrorCode):
            return _TITLES[self.code]
        return "The upload would be refused"  # intake's own reasons (RejectionCode)

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": TYPE_PREFIX + str(self.code), "title": self.title, "status": self.status,
                                "detail": self.detail, "code": str(self.code), **self.extra}
        if instance:
            body["instance"] = instance
        return body

    def to_json(self, instance: str | None = None) -> str:
        return json.dumps(self.to_dict(instance), separators=(",", ":"), default=str)


def refused(code: RejectionCode, message: str) -> ApiProblem:
    """An upload intake would refuse, refused before it is made."""
    return ApiProblem(422, code, message)
