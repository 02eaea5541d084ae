"""The committed OpenAPI document (docs/openapi.json) is what the code generates, and a valid OpenAPI 3.1 document."""

from __future__ import annotations

import json

from functions.api.handler import openapi_document
from functions.api.openapi import DOCUMENT, problems, render


def test_the_committed_document_is_the_codes_and_valid() -> None:
    assert problems(DOCUMENT.read_text(), openapi_document()) == []


def test_a_stale_or_invalid_document_is_caught() -> None:
    generated = openapi_document()
    stale = json.loads(render(generated))
    del stale["paths"]["/v1/jobs"]["post"]
    assert any("differs from what the code generates" in p for p in problems(render(stale), generated))
    broken = render({**generated, "openapi": "3.1.0", "paths": {"/v1/jobs": {"get": {"responses": "none"}}}})
    assert any("not a valid OpenAPI document" in p for p in problems(broken, generated))


def test_every_operation_names_its_problems_and_requires_an_identity() -> None:
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    assert document["security"] == [{"sigv4": []}, {"jwt": []}]
    assert document["components"]["securitySchemes"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            problem_statuses = {s for s, r in operation["responses"].items() if "application/problem+json"
                                in r.get("content", {})}
            assert "401" in problem_statuses, (method, path)
            assert "HTTPValidationError" not in json.dumps(operation)
