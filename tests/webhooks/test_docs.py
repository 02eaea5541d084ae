"""docs/webhooks.md as people read it: its receiver example works, and its SSRF table names real tests."""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path

from functions.webhooks.signing import SigningKeys, generate_secret

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "webhooks.md"


def test_the_documented_receiver_verifies_dedupes_and_refuses() -> None:
    [code] = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace: dict[str, object] = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # our own documentation
    secret, stranger = generate_secret(), generate_secret()
    namespace["SECRETS"] = [generate_secret(), secret]  # mid-rotation: the new one first
    body = b'{"event_id":"evt_1","event_type":"upscale.succeeded","job_id":"j1"}'
    headers = SigningKeys.parse(secret).headers("evt_1", int(time.time()), body)
    handle, stock = namespace["handle"], namespace["handle_with_the_stock_library"]
    assert callable(handle) and callable(stock)
    assert handle(body, headers) == 200
    assert handle(body, headers) == 200 and namespace["seen"] == {"evt_1"}  # the copy is deduped
    forged = SigningKeys.parse(stranger).headers("evt_1", int(time.time()), body)
    assert handle(body, forged) == 401
    namespace["SECRETS"] = [secret]
    assert stock(body, headers) == 200 and stock(body, forged) == 401


def test_every_test_the_ssrf_table_names_exists() -> None:
    table = DOC.read_text().split("## SSRF", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(test_\w+)`", table))
    module = ast.parse((ROOT / "tests" / "webhooks" / "test_ssrf.py").read_text())
    defined = {node.name for node in module.body if isinstance(node, ast.FunctionDef)}
    assert len(named) >= 11 and named <= defined, named - defined
