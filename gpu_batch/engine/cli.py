"""Engine commands for the `upscaler` console script: `upscale`, `models build`, `models list`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common.contract import ModelName, OutputFormat

from .errors import EngineError
from .models import MODEL_SPECS, PRECISIONS, ModelBuildError, default_model_dir, ensure_model, model_status

err = Console(stderr=True)
out = Console()

models_app = typer.Typer(help="Build and inspect the ONNX model cache.", no_args_is_help=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def upscale(
    input: Annotated[Path, typer.Argument(help="Image to upscale (JPEG, PNG, WebP, TIFF, BMP, ...).")],
    output: Annotated[Path, typer.Argument(help="Where to write the result.")],
    model: Annotated[ModelName, typer.Option(help="Network to run.")] = ModelName.X4PLUS,
    scale: Annotated[float, typer.Option(min=1.0, max=4.0, help="Output scale, 1 to 4 (e.g. 2.5).")] = 4.0,
    tile: Annotated[int, typer.Option(min=0, help="Tile size in input pixels; 0 = from available memory.")] = 0,
    format: Annotated[OutputFormat | None, typer.Option(help="Output format; default: follow the input.")] = None,
    quality: Annotated[int | None, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = None,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
) -> None:
    """Upscale one image with Real-ESRGAN."""
    from .engine import Engine  # imported here so `upscaler --help` stays fast

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
                                      tile_size=tile, progress=on_progress)
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
    names = [m.value for m in model] if model else list(MODEL_SPECS)
    precisions = precision or list(PRECISIONS)
    logging.basicConfig(level=logging.WARNING)
    try:
        for name in names:
            for prec in precisions:
                path = ensure_model(name, precision=prec, force=force)
                out.print(f"{name:14} {prec}  {path}", highlight=False)
    except ModelBuildError as exc:
        raise _fail(str(exc)) from None


@models_app.command("list")
def list_models() -> None:
    """Show every model and precision with its path, size, checksum and whether it is built."""
    model_dir = default_model_dir()
    table = Table(title=f"models in {model_dir}")
    for column in ("name", "precision", "path", "size", "sha256", "built"):
        table.add_column(column)
    for name in MODEL_SPECS:
        for prec in PRECISIONS:
            status = model_status(name, prec, model_dir)
            table.add_row(name, prec, str(status.path), f"{status.size / 1e6:.1f} MB" if status.size else "-",
                          status.sha256[:16] or "-", "yes" if status.built else "no")
    Console(width=200).print(table)
