"""`upscaler upscale` and `upscaler models build|list` (the engine's commands, composed as cli/main.py does)."""

from __future__ import annotations

import typer
from PIL import Image
from typer.testing import CliRunner

from gpu_batch.engine.cli import models_app, upscale
from gpu_batch.engine.models import read_manifest

app = typer.Typer()
app.command("upscale")(upscale)
app.add_typer(models_app, name="models")
runner = CliRunner()


def test_upscale_writes_the_scaled_image(tmp_path, astronaut, tools) -> None:
    source = tmp_path / "in.png"
    Image.fromarray(tools.crop(astronaut, 20, 30)).save(source)
    target = tmp_path / "out" / "big.webp"
    result = runner.invoke(app, ["upscale", str(source), str(target), "--model", "animevideov3", "--scale", "2.5",
                                 "--format", "webp", "--quality", "80", "--tile", "32"])
    assert result.exit_code == 0, result.output
    written = Image.open(target)
    assert written.format == "WEBP" and written.size == (75, 50)


def test_unreadable_input_gives_one_clear_line_and_nonzero_exit(tmp_path) -> None:
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("this is not a picture")
    result = runner.invoke(app, ["upscale", str(bogus), str(tmp_path / "out.jpg"), "--model", "animevideov3"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0] and "notes.jpg" in lines[0]
    assert not (tmp_path / "out.jpg").exists()

    missing = runner.invoke(app, ["upscale", str(tmp_path / "absent.png"), str(tmp_path / "o.png")])
    assert missing.exit_code != 0 and "cannot read" in missing.output


def test_models_build_and_list(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("UPSCALER_MODEL_DIR", str(tmp_path))
    built = runner.invoke(app, ["models", "build", "--model", "animevideov3", "--precision", "fp16"])
    assert built.exit_code == 0, built.output
    assert "realesrgan-animevideov3-fp16.onnx" in read_manifest(tmp_path)
    listed = runner.invoke(app, ["models", "list", "--wide"])
    assert listed.exit_code == 0
    rows = {tuple(line.split("│")[2:4]): line for line in listed.output.splitlines() if "│" in line}
    by_key = {(name.strip(), prec.strip()): line for (name, prec), line in rows.items()}
    assert by_key[("animevideov3", "fp16")].rstrip(" │").endswith("yes")
    assert by_key[("x4plus", "fp32")].rstrip(" │").endswith("no")
