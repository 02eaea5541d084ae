"""The committed OpenAPI document (docs/openapi.json): write it, or check it matches the code and is valid.

`python -m functions.api.openapi --write` after changing a route or a model; CI runs the check
(tests/api/test_openapi.py), which fails when the committed copy and the code disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def problems(committed: str, generated: dict[str, Any]) -> list[str]:
    """Why the committed document is not the code's (empty: it is, and it is a valid OpenAPI 3.1 document)."""
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    found = []
    if committed != render(generated):
        found.append(f"{DOCUMENT} differs from what the code generates; run: python -m functions.api.openapi --write")
    try:
        validate(json.loads(committed))
    except (OpenAPIValidationError, ValueError) as exc:
        found.append(f"{DOCUMENT} is not a valid OpenAPI document: {exc}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write docs/openapi.json from the code")
    args = parser.parse_args(argv)
    from functions.api.handler import openapi_document

    generated = openapi_document()
    if args.write:
        DOCUMENT.write_text(render(generated))
        print(f"wrote {DOCUMENT}")
    found = problems(DOCUMENT.read_text() if DOCUMENT.exists() else "", generated)
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
