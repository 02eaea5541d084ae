"""Engine commands for the `upscaler` console script: `upscale`, `models build`, `models list`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common.contract import ModelName, OutputFormat
from common.formats import EXTENSIONS

from .errors import EngineError

if TYPE_CHECKING:
    from .engine import Engine
from .models import (
    MODEL_NETWORKS,
    PRECISIONS,
    ModelBuildError,
    default_model_dir,
    ensure_model,
    model_status,
)

err = Console(stderr=True)
out = Console()

models_app = typer.Typer(help="Build and inspect the ONNX model cache.", no_args_is_help=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def upscale(
    input: Annotated[Path, typer.Argument(
        help="Image to upscale (JPEG, PNG, WebP, HEIC, AVIF, TIFF, ...), or a folder of them.")],
    output: Annotated[Path, typer.Argument(help="Where to write the result (a folder when INPUT is one).")],
    model: Annotated[ModelName, typer.Option(help="Network to run.")] = ModelName.X4PLUS,
    scale: Annotated[float, typer.Option(min=1.0, max=4.0, help="Output scale, 1 to 4 (e.g. 2.5).")] = 4.0,
    tile: Annotated[int, typer.Option(min=0, help="Tile size in input pixels; 0 = from available memory.")] = 0,
    format: Annotated[OutputFormat | None, typer.Option(help="Output format; default: follow the input.")] = None,
    quality: Annotated[int | None, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = None,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
    strength: Annotated[float, typer.Option(min=0.0, max=1.0, help=(
        "The network's share, 0-1; below 1 blends in a faithful Lanczos resize (keeps more texture)."))] = 1.0,
) -> None:
    """Upscale one image, or every image in a folder, with Real-ESRGAN."""
    from .engine import Engine  # imported here so `upscaler --help` stays fast

    if input.is_dir():
        options = {"model": model.value, "scale": scale, "output_format": format.value if format else None,
                   "quality": quality, "tile_size": tile, "strength": strength}
        _upscale_folder(input, output, Engine(device=device), options)
        return

    try:
        data = input.read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read {input}: {exc.strerror or exc}") from None
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tiles"),
                   TimeElapsedColumn(), console=err)
    task = bar.add_task(f"{input.name} ({model.value})", total=None)

    def on_progress(done: int, total: int) -> None:
        if not bar.live.is_started:  # shown only once decoding worked, so errors stay one line
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        engine = Engine(device=device)
        result = engine.upscale_bytes(data, model=model.value, scale=scale,
                                      output_format=format.value if format else None, quality=quality,
                                      tile_size=tile, progress=on_progress, strength=strength)
    except (EngineError, ModelBuildError, ValueError) as exc:
        raise _fail(f"{input}: {exc}", 2 if getattr(exc, "permanent", False) else 1) from None
    finally:
        bar.stop()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(result.data)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    err.print(f"{result.input_width}x{result.input_height} -> {result.output_width}x{result.output_height} "
              f"{result.format} in {result.inference_seconds:.1f}s on {result.provider}: {output}", highlight=False)


@models_app.command("build")
def build(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the cached file checks out.")] = False,
    model: Annotated[list[ModelName] | None, typer.Option(help="Model(s) to build; default all.")] = None,
    precision: Annotated[list[str] | None, typer.Option(help="fp32 and/or fp16; default both.")] = None,
) -> None:
    """Convert the shipped ncnn weights to ONNX into the model cache (checksummed)."""
    chosen = [m.value for m in model] if model else list(MODEL_NETWORKS)
    names = list(dict.fromkeys(net for name in chosen for net in MODEL_NETWORKS[name]))  # the ones jobs run
    precisions = precision or list(PRECISIONS)
    logging.basicConfig(level=logging.WARNING)
    try:
        for name in names:
            for prec in precisions:
                path = ensure_model(name, precision=prec, force=force, fetch=True)  # the one place that downloads
                out.print(f"{name:28} {prec}  {path}", highlight=False)
    except ModelBuildError as exc:
        raise _fail(str(exc)) from None


@models_app.command("list")
def list_models() -> None:
    """Show every model and precision with its path, size, checksum and whether it is built."""
    model_dir = default_model_dir()
    table = Table(title=f"models in {model_dir}")
    for column in ("name", "precision", "path", "size", "sha256", "built"):
        table.add_column(column)
    for name in dict.fromkeys(net for nets in MODEL_NETWORKS.values() for net in nets):
        for prec in PRECISIONS:
            status = model_status(name, prec, model_dir)
            table.add_row(name, prec, str(status.path), f"{status.size / 1e6:.1f} MB" if status.size else "-",
                          status.sha256[:16] or "-", "yes" if status.built else "no")
    Console(width=200).print(table)


def _output_names(files: list[Path]) -> dict[Path, str]:
    """Output file stem per input: its stem, or its whole name where two inputs share a stem (a.png, a.heic)."""
    stems: dict[str, int] = {}
    for path in files:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    return {path: path.stem if stems[path.stem] == 1 else path.name for path in files}


def _upscale_folder(folder: Path, target: Path, engine: Engine, options: dict[str, Any]) -> None:
    """Every file of `folder` (not recursive, hidden files ignored) into `target`; one bar over the set.

    A file that is not an image, or that the engine refuses, is skipped and listed with its reason at the
    end. Exit status 0 when every file was written (or the folder is empty), 1 when any was skipped.
    """
    if target.exists() and not target.is_dir():
        raise _fail(f"{target} is a file; when the input is a folder, the output must be a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    names = _output_names(files)
    target.mkdir(parents=True, exist_ok=True)
    skipped: list[tuple[str, str]] = []
    written = 0
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
                   TimeElapsedColumn(), console=err)
    task = bar.add_task(f"{folder} ({options['model']})", total=len(files))
    with bar:
        for index, path in enumerate(files):
            bar.update(task, description=path.name, completed=index)

            def on_progress(done: int, total: int, index: int = index) -> None:
                bar.update(task, completed=index + done / max(total, 1))

            try:
                result = engine.upscale_bytes(path.read_bytes(), progress=on_progress, **options)
            except ModelBuildError as exc:
                raise _fail(str(exc)) from None  # no model: no other file would work either
            except OSError as exc:
                skipped.append((path.name, f"cannot read: {exc.strerror or exc}"))
                continue
            except (EngineError, ValueError) as exc:
                skipped.append((path.name, str(exc)))
                continue
            out = target / f"{names[path]}{EXTENSIONS[OutputFormat(result.format)]}"
            out.write_bytes(result.data)
            written += 1
            for warning in result.warnings:
                bar.console.print(f"[yellow]warning:[/] {path.name}: {warning}", highlight=False)
        bar.update(task, description=str(folder), completed=len(files))
    err.print(f"{written} of {len(files)} images upscaled into {target}", highlight=False)
    if skipped:
        table = Table(title=f"skipped ({len(skipped)})", title_justify="left")
        table.add_column("file")
        table.add_column("why")
        for name, reason in skipped:
            table.add_row(name, reason)
        err.print(table)
        raise typer.Exit(1)
