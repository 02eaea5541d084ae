"""A webhook sender for tests: records each request and answers with a fixed response (or raises)."""

from __future__ import annotations

from functions.webhooks.sender import HttpRequest, HttpResponse, SendFailed

NO_CONTENT = HttpResponse(204, b"")


class RecordingSender:
    def __init__(self, response: HttpResponse | SendFailed = NO_CONTENT) -> None:
        self.response = response
        self.requests: list[HttpRequest] = []

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        if isinstance(self.response, SendFailed):
            raise self.response
        return self.response
