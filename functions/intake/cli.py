"""`upscaler validate FILE [--json]`: the intake Lambda's validation, run on a local file.

Exit status 0: the upload would be accepted; 1: it would be refused (the reason is printed);
2: usage error (Typer's). Limits come from the same UPSCALER_* settings as the Lambda's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from common.contract import RejectionCode
from common.settings import Settings
from functions.intake.options import InvalidOption, parse_options
from functions.intake.validation import Verdict, file_too_large, reject, validate_bytes

EXIT_VALID = 0
EXIT_REJECTED = 1


def validate(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="Image file to check as the intake Lambda would.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    model: Annotated[str | None, typer.Option(help="As x-amz-meta-model.")] = None,
    scale: Annotated[str | None, typer.Option(help="As x-amz-meta-scale.")] = None,
    output_format: Annotated[str | None, typer.Option("--format", help="As x-amz-meta-format.")] = None,
    strength: Annotated[str | None, typer.Option(help="As x-amz-meta-strength (0-1 or 0%-100%).")] = None,
) -> None:
    """Check an image against the upload rules (content, limits, options) without uploading it."""
    verdict = validate_file(file, settings=Settings.from_env(),
                            metadata={k: v for k, v in (("model", model), ("scale", scale), ("format", output_format),
                                                        ("strength", strength)) if v is not None})
    if json_output:
        typer.echo(json.dumps({"file": str(file), **verdict.to_dict()}, indent=2))
    else:
        typer.echo(describe(file, verdict))
    raise typer.Exit(EXIT_VALID if verdict.accepted else EXIT_REJECTED)


def validate_file(path: Path, *, settings: Settings, metadata: dict[str, str] | None = None) -> Verdict:
    options = parse_options(metadata or {}, settings)
    if isinstance(options, InvalidOption):
        return reject(RejectionCode.INVALID_OPTION, options.message)
    size = path.stat().st_size
    if size > settings.max_upload_bytes:  # like the Lambda: refused before reading a byte
        return file_too_large(size, settings)
    return validate_bytes(path.read_bytes(), options=options, settings=settings)


def describe(path: Path, verdict: Verdict) -> str:
    if not verdict.accepted:
        return f"REJECTED {path}: {verdict.code}\n  {verdict.message}"
    lines = [
        f"VALID {path}: {verdict.format.upper() if verdict.format else '?'} {verdict.width}×{verdict.height}"
        f" {verdict.mode or ''}".rstrip(),
        f"  output: {verdict.output_format} {verdict.output_width}×{verdict.output_height}",
    ]
    if verdict.orientation and verdict.orientation != 1:
        lines.append(f"  EXIF orientation {verdict.orientation} (applied when upscaling)")
    lines.extend(f"  warning: {w}" for w in verdict.warnings)
    return "\n".join(lines)

