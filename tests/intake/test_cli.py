"""`upscaler validate FILE [--json]` (the intake's validation on a local file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from functions.intake.cli import validate

app = typer.Typer()
app.command()(validate)
runner = CliRunner()


@pytest.fixture
def write(tmp_path: Path, corpus: dict[str, bytes]):  # type: ignore[no-untyped-def]
    def make(name: str, as_name: str | None = None) -> Path:
        path = tmp_path / (as_name or name)
        path.write_bytes(corpus[name])
        return path
    return make


def test_valid_file_exits_zero_with_a_summary(write) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, [str(write("exif_rotated.jpg"))])
    assert result.exit_code == 0, result.output
    assert "VALID" in result.output and "JPEG 80×40" in result.output
    assert "output: jpeg 320×160" in result.output
    assert "EXIF orientation 6" in result.output


def test_rejected_file_exits_one_with_code_and_reason(write) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, [str(write("bomb.png", "innocent.png"))])
    assert result.exit_code == 1
    assert "REJECTED" in result.output and "DECOMPRESSION_BOMB" in result.output
    assert "100000×100000" in result.output


def test_json_output(write) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, [str(write("doc.pdf", "scan.jpg")), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert (data["accepted"], data["code"], data["format"]) == (False, "UNSUPPORTED_FORMAT", "pdf")
    assert data["file"].endswith("scan.jpg")

    ok = json.loads(runner.invoke(app, [str(write("photo.webp")), "--json", "--scale", "2", "--format", "png"]).output)
    assert (ok["accepted"], ok["output_format"], ok["output_width"]) == (True, "png", 192)


def test_options_are_checked_like_metadata(write) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, [str(write("photo.jpg")), "--model", "nope"])
    assert result.exit_code == 1 and "INVALID_OPTION" in result.output


def test_limits_come_from_the_environment(write, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    path = write("photo.png")
    monkeypatch.setenv("UPSCALER_MAX_UPLOAD_BYTES", "1000")
    result = runner.invoke(app, [str(path)])
    assert result.exit_code == 1 and "FILE_TOO_LARGE" in result.output


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    assert runner.invoke(app, [str(tmp_path / "nope.jpg")]).exit_code == 2
