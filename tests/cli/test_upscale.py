"""`upscaler upscale` as a new user runs it: the output's name picks the format, a folder means "same name
inside", options parse as upload metadata does, refusals read as `upscaler validate`, and nothing is
decided after the inference that could have been decided before it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from gpu_batch.engine import cli as engine_cli
from gpu_batch.engine.engine import Engine

runner = CliRunner()
FAST = ["--model", "animevideov3"]  # the cheap network: these tests are about the command, not the pixels


def _jpeg(path: Path, size: tuple[int, int] = (24, 16)) -> Path:
    Image.linear_gradient("L").resize(size).convert("RGB").save(path, "JPEG", quality=80)
    return path


def _upscale(*args: str) -> Any:
    return runner.invoke(app, ["upscale", *map(str, args)])


@pytest.fixture
def inferences(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every call to the engine, with its options (the real engine still runs)."""
    calls: list[dict[str, Any]] = []
    real = Engine.upscale_bytes

    def recording(self: Engine, data: bytes, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(self, data, **kwargs)

    monkeypatch.setattr(Engine, "upscale_bytes", recording)
    return calls


def test_the_output_name_picks_the_format(tmp_path: Path) -> None:
    source = _jpeg(tmp_path / "in.jpg")
    result = _upscale(source, tmp_path / "out.png", *FAST)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out.png").format == "PNG"  # not JPEG bytes in a .png
    result = _upscale(source, tmp_path / "out.tif", *FAST, "--format", "tiff")  # agreeing is fine
    assert result.exit_code == 0 and Image.open(tmp_path / "out.tif").format == "TIFF"


@pytest.mark.parametrize(("name", "extra", "says"), [
    ("out.jpg", ["--format", "png"], "--format png conflicts with the output name 'out.jpg' (jpeg)"),
    ("out.xyz", [], "cannot tell an image format from 'out.xyz'"),
])
def test_a_format_the_name_cannot_give_is_refused_before_any_inference(
        tmp_path: Path, inferences: list[dict[str, Any]], name: str, extra: list[str], says: str) -> None:
    result = _upscale(_jpeg(tmp_path / "in.jpg"), tmp_path / name, *FAST, *extra)
    assert result.exit_code == 2 and says in " ".join(result.output.split())
    assert inferences == [] and not (tmp_path / name).exists()


def test_a_folder_output_means_the_same_name_inside(tmp_path: Path) -> None:
    source = _jpeg(tmp_path / "coffee.jpg")
    (tmp_path / "out").mkdir()
    result = _upscale(source, tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output  # no IsADirectoryError after the inference
    assert Image.open(tmp_path / "out" / "coffee.jpg").size == (96, 64)
    result = _upscale(source, f"{tmp_path / 'new'}/", *FAST, "--format", "webp")  # a trailing slash: a folder
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "new" / "coffee.webp").format == "WEBP"


def test_an_output_that_cannot_be_created_is_refused_before_any_inference(
        tmp_path: Path, inferences: list[dict[str, Any]]) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    result = _upscale(_jpeg(tmp_path / "in.jpg"), tmp_path / "notes.txt" / "out.png", *FAST)
    assert result.exit_code == 1 and "cannot create" in result.output and inferences == []


def test_options_parse_as_upload_metadata_does(tmp_path: Path, inferences: list[dict[str, Any]]) -> None:
    result = _upscale(_jpeg(tmp_path / "in.jpg"), tmp_path / "out.jpg", *FAST, "--strength", "50%", "--scale", "2x")
    assert result.exit_code == 0, result.output
    (call,) = inferences
    assert call["strength"] == 0.5 and call["scale"] == 2.0 and call["model"] == "animevideov3"
    refused = _upscale(_jpeg(tmp_path / "in.jpg"), tmp_path / "o.jpg", "--model", "illustration-x2")
    assert refused.exit_code == 2 and "Unknown model 'illustration-x2' in --model" in refused.output


def test_a_refusal_reads_as_validate_says_it(tmp_path: Path, inferences: list[dict[str, Any]]) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(30_000, 30_000))  # 900 MP declared in a tiny file
    result = _upscale(bomb, tmp_path / "out.png", *FAST)
    validated = runner.invoke(app, ["validate", str(bomb)])
    sentence = validated.output.splitlines()[1].strip()
    assert result.exit_code == 2 and sentence in " ".join(result.output.split())
    assert "decompression bomb" not in result.output and inferences == []


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def test_folder_names_never_double_an_extension_and_keep_inputs_apart(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    _jpeg(source / "coffee.jpg")
    _jpeg(source / "coffee.jpeg")
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((24, 16)).convert("RGB").save(buffer, "AVIF")
    (source / "coffee.avif").write_bytes(buffer.getvalue())
    (source / "bomb.png").write_bytes(_png_header(30_000, 30_000))
    result = _upscale(source, tmp_path / "out", *FAST)
    assert result.exit_code == 1, result.output  # the bomb was skipped
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["coffee-jpeg.jpg", "coffee-jpg.jpg",
                                                                     "coffee.avif"]
    validated = runner.invoke(app, ["validate", str(source / "bomb.png")]).output.splitlines()[1].strip()
    assert f"bomb.png: {validated}" in " ".join(result.output.split())


def test_output_names() -> None:
    names = engine_cli.output_names({Path("a.jpg"): "jpeg", Path("a.png"): "png", Path("b.heic"): "jpeg",
                                     Path("b.jpg"): "jpeg"})
    assert names == {Path("a.jpg"): "a.jpg", Path("a.png"): "a.png", Path("b.heic"): "b-heic.jpg",
                     Path("b.jpg"): "b-jpg.jpg"}
