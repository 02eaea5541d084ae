"""`upscaler upscale FOLDER OUT`: every image it can, one progress bar, a summary of what was skipped and why."""

from __future__ import annotations

import io

import typer
from PIL import Image
from typer.testing import CliRunner

from common.heif import register_heif_opener
from gpu_batch.engine.cli import upscale

app = typer.Typer()
app.command("upscale")(upscale)
app.command("other")(lambda: None)  # two commands: Typer keeps the "upscale" sub-command name
runner = CliRunner()


def _image(fmt: str, size: tuple[int, int] = (20, 12)) -> bytes:
    register_heif_opener()
    stream = io.BytesIO()
    Image.linear_gradient("L").resize(size).convert("RGB").save(stream, fmt)
    return stream.getvalue()


def test_folder_in_folder_out(tmp_path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "phone.heic").write_bytes(_image("HEIF"))
    (source / "scan.png").write_bytes(_image("PNG"))
    (source / "scan.tiff").write_bytes(_image("TIFF"))  # same stem as scan.png: names kept apart
    (source / "notes.txt").write_text("not a picture")
    (source / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    target = tmp_path / "out"

    result = runner.invoke(app, ["upscale", str(source), str(target), "--model", "animevideov3", "--scale", "2"])

    assert result.exit_code == 1, result.output  # something was skipped
    assert sorted(p.name for p in target.iterdir()) == ["phone.jpg", "scan.png", "scan.tif"]  # no scan.png.png
    assert Image.open(target / "phone.jpg").size == (40, 24)
    assert "3 of 4 images upscaled" in result.output
    # the sentence `upscaler validate` prints for it
    assert "notes.txt: This file is a text file, not an image." in result.output
    assert ".DS_Store" not in result.output


def test_folder_with_a_requested_format_and_nothing_skipped(tmp_path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.png").write_bytes(_image("PNG"))
    (source / "b.avif").write_bytes(_image("AVIF"))
    result = runner.invoke(app, ["upscale", str(source), str(tmp_path / "out"), "--model", "animevideov3",
                                 "--scale", "1.5", "--format", "avif"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.avif", "b.avif"]


def test_folder_into_an_existing_file_is_refused(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out.jpg").write_bytes(b"x")
    result = runner.invoke(app, ["upscale", str(tmp_path / "in"), str(tmp_path / "out.jpg")])
    assert result.exit_code == 1 and "must be a folder" in result.output
