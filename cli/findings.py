"""What `upscaler doctor` found: one row per check, grouped in sections, as a table or as JSON, and the exit code."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

EXIT_READY, EXIT_BLOCKED, EXIT_WARNINGS = 0, 1, 2


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    found: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    findings: Sequence[Finding]


def blocking(findings: Iterable[Finding]) -> bool:
    return any(f.status is Status.FAIL for f in findings)


def exit_code(sections: Sequence[Section]) -> int:
    """0: ready; 1: something blocks a deploy (or the pipeline it deploys); 2: warnings only."""
    found = [f for s in sections for f in s.findings]
    if blocking(found):
        return EXIT_BLOCKED
    return EXIT_WARNINGS if any(f.status is Status.WARN for f in found) else EXIT_READY


_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def render(sections: Sequence[Section], *, console: Console) -> None:
    for section in sections:
        table = Table(title=section.title, title_justify="left", show_lines=True)
        table.add_column("check", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("found", overflow="fold")  # fold, not ellipsis: parameter names and commands stay whole
        table.add_column("what to do", overflow="fold")
        for f in section.findings:
            table.add_row(f.check, f"[{_STYLE[f.status]}]{f.status}[/]", f.found, f.fix)
        console.print(table)
    found = [f for s in sections for f in s.findings]
    failed = sum(f.status is Status.FAIL for f in found)
    warned = sum(f.status is Status.WARN for f in found)
    if failed:
        console.print(f"[bold red]{failed} problem(s) block a deploy[/]: fix the FAIL rows first.")
    elif warned:
        console.print(f"[yellow]Nothing blocks a deploy; {warned} warning(s) to read.[/]")
    else:
        console.print("[green]Nothing blocks a deploy.[/]")


def as_json(sections: Sequence[Section], **context: Any) -> dict[str, Any]:
    return {**context, "exit_code": exit_code(sections),
            "sections": [{"title": s.title, "findings": [asdict(f) for f in s.findings]} for s in sections]}
