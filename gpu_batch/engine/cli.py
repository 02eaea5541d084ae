"""Engine commands for the `upscaler` console script: `upscale`, `models build`, `models list`.

`upscale` takes its options through the intake's own parser (functions/intake/options.py: `--strength 50%`,
`--scale 2x`, `--format jpg` mean what they mean in upload metadata) and checks each input with the intake's
validation, so refusals read the same as `upscaler validate`. Every output is decided and checked before
any inference: the output file's extension decides its format unless `--format` says otherwise (a conflict
is an error), and an output folder means "the same name inside it".
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common.contract import JobOptions, ModelName, OutputFormat
from common.formats import EXTENSIONS, MAX_SCALE, MIN_SCALE
from common.settings import Settings

from .errors import EngineError
from .models import (
    CUGAN,
    ESRGAN,
    MODEL_NETWORKS,
    MODEL_SPECS,
    PRECISIONS,
    ModelBuildError,
    default_model_dir,
    ensure_model,
    model_status,
)

if TYPE_CHECKING:
    from functions.intake.validation import Verdict


err = Console(stderr=True)
out = Console()

models_app = typer.Typer(help="Build and inspect the ONNX model cache.", no_args_is_help=True)
EXIT_FAILED, EXIT_REFUSED = 1, 2  # 2: permanent (the input or the options themselves)
MODEL_CHOICES = "|".join(m.value for m in ModelName)
LIST_WIDTH = 100  # `models list` fits a 100-column terminal; --wide shows the files
FORMAT_CHOICES = "|".join(f.value for f in OutputFormat)


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def upscale(
    input: Annotated[Path, typer.Argument(
        help="Image to upscale (JPEG, PNG, WebP, HEIC, AVIF, TIFF, ...), or a folder of them.")],
    output: Annotated[str, typer.Argument(
        help="Where to write the result: a file (its extension picks the format), or a folder (same name inside).",
        show_default=False)],
    model: Annotated[str | None, typer.Option(help=f"Model ({MODEL_CHOICES}); `upscaler models list`.")] = None,
    scale: Annotated[str | None, typer.Option(help="Output scale, 1 to 4 (e.g. 2.5 or 2x).")] = None,
    tile: Annotated[int, typer.Option(min=0, help="Tile size in input pixels; 0 = from available memory.")] = 0,
    format: Annotated[str | None, typer.Option(
        help=f"Output format ({FORMAT_CHOICES}); default: the output file's extension, else the input's.")] = None,
    quality: Annotated[int | None, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = None,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
    strength: Annotated[str | None, typer.Option(help=(
        "The network's share, 0-1 or 0%-100%; below 1 blends in a faithful Lanczos resize (keeps more texture)."))]
        = None,
) -> None:
    """Upscale one image, or every image in a folder, with Real-ESRGAN."""
    asked = {"model": model, "scale": scale, "strength": strength}
    if input.is_dir():
        target = Path(output)
        if target.exists() and not target.is_dir():
            raise _fail(f"{target} is a file; when the input is a folder, the output must be a folder")
        options = _options({**asked, "format": format})
        _upscale_folder(input, target, options, tile=tile, quality=quality, device=device)
        return
    destination = _destination(input, output, format)
    options = _options({**asked, "format": destination.format})
    _upscale_file(input, destination, options, tile=tile, quality=quality, device=device)


# --- options and outputs, all decided before any inference ----------------------------------------------

def _options(asked: dict[str, str | None]) -> JobOptions:
    from functions.intake.options import CLI_OPTION, InvalidOption, parse_options

    parsed = parse_options({k: v for k, v in asked.items() if v is not None}, Settings.from_env(), label=CLI_OPTION)
    if isinstance(parsed, InvalidOption):
        raise _fail(parsed.message, EXIT_REFUSED)
    return parsed


@dataclass(frozen=True, slots=True)
class Destination:
    path: Path | None  # None: a folder; the name follows once the format is known
    folder: Path
    format: str | None  # from --format or the file's extension; None: follow the input


def _destination(source: Path, output: str, requested: str | None) -> Destination:
    """Where one result goes and in what format; refuses what could only fail after the inference."""
    from functions.intake.options import parse_format

    target = Path(output)
    if target.is_dir() or output.endswith(("/", os.sep)):
        fmt = _format_option(requested)
        return Destination(None, target, fmt.value if fmt else None)
    by_name = parse_format(target.suffix) if target.suffix else None
    fmt = _format_option(requested)
    if target.suffix and by_name is None and fmt is None:
        known = ", ".join(sorted({*EXTENSIONS.values(), ".jpeg", ".tiff"}))
        raise _fail(f"cannot tell an image format from {target.name!r}: end it in {known}, or pass --format",
                    EXIT_REFUSED)
    if by_name is not None and fmt is not None and fmt is not by_name:
        raise _fail(f"--format {fmt.value} conflicts with the output name {target.name!r} ({by_name.value}): "
                    f"rename the output or drop --format", EXIT_REFUSED)
    if target.parent.exists() and not os.access(target.parent, os.W_OK):
        raise _fail(f"cannot write into {target.parent}")
    if source.resolve() == target.resolve():
        raise _fail(f"{target} is the input itself; choose another output")
    chosen = by_name or fmt
    return Destination(target, target.parent, chosen.value if chosen else None)


def _format_option(requested: str | None) -> OutputFormat | None:
    from functions.intake.options import parse_format

    if requested is None:
        return None
    fmt = parse_format(requested)
    if fmt is None:
        raise _fail(f"Unknown output format {requested!r} in --format; choose one of "
                    f"{FORMAT_CHOICES.replace('|', ', ')}.", EXIT_REFUSED)
    return fmt


def _check(path: Path, options: JobOptions) -> tuple[bytes, Verdict]:
    """The file's bytes and the intake's verdict on them (size, format, limits, a full decode)."""
    from functions.intake.validation import validate_bytes

    data = path.read_bytes()
    return data, validate_bytes(data, options=options, settings=Settings.from_env())


# --- one file ---------------------------------------------------------------------------------------------

def _upscale_file(source: Path, destination: Destination, options: JobOptions, *, tile: int, quality: int | None,
                  device: str) -> None:
    from cli.progress import TileProgress, estimate, record_speed, slow_notice

    from .engine import Engine

    try:
        data, verdict = _check(source, options)
    except OSError as exc:
        raise _fail(f"cannot read {source}: {exc.strerror or exc}") from None
    if not verdict.accepted:
        raise _fail(f"{source}: {verdict.message}", EXIT_REFUSED)
    assert verdict.output_format is not None and verdict.width and verdict.height
    fmt = verdict.output_format
    target = destination.path or destination.folder / f"{source.stem}{EXTENSIONS[OutputFormat(fmt)]}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"cannot create {target.parent}: {exc.strerror or exc}") from None

    try:
        engine = Engine(device=device)
        found = estimate(engine, model=options.model.value, scale=options.scale, width=verdict.width,
                         height=verdict.height, tile_size=tile)
        notice = slow_notice(found, model=options.model.value, width=verdict.width, height=verdict.height)
        if notice:
            err.print(notice, highlight=False)
        with TileProgress(f"{source.name} ({options.model.value})", found, console=err) as progress:
            result = engine.upscale_bytes(data, model=options.model.value, scale=options.scale, output_format=fmt,
                                          quality=quality, tile_size=tile, progress=progress,
                                          strength=options.strength)
    except (EngineError, ModelBuildError, ValueError) as exc:
        raise _fail(f"{source}: {exc}", EXIT_REFUSED if getattr(exc, "permanent", False) else EXIT_FAILED) from None
    record_speed(found, result.inference_seconds)
    target.write_bytes(result.data)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    err.print(f"{result.input_width}x{result.input_height} -> {result.output_width}x{result.output_height} "
              f"{result.format} in {result.inference_seconds:.1f}s on {result.provider}: {target}", highlight=False)


# --- a folder ---------------------------------------------------------------------------------------------

def output_names(formats: dict[Path, str]) -> dict[Path, str]:
    """Output file name per input: its stem with its output format's extension; inputs that would land on the
    same name (a.jpg and a.jpeg, or a.png and a.jpg with --format png) keep their own extension in the stem:
    a-jpg.png, a-png.png. Never a.jpg.jpg."""
    planned = {path: f"{path.stem}{EXTENSIONS[OutputFormat(fmt)]}" for path, fmt in formats.items()}
    taken: dict[str, int] = {}
    for name in planned.values():
        taken[name.lower()] = taken.get(name.lower(), 0) + 1
    return {path: name if taken[name.lower()] == 1 else
            f"{path.stem}-{path.suffix.lstrip('.').lower()}{EXTENSIONS[OutputFormat(formats[path])]}"
            for path, name in planned.items()}


def _upscale_folder(folder: Path, target: Path, options: JobOptions, *, tile: int, quality: int | None,
                    device: str) -> None:
    """Every file of `folder` (not recursive, hidden files ignored) into `target`; one bar over the set.

    Each file is checked as the intake would first (a refusal reads as `upscaler validate` says it); the names
    are decided before any inference. Exit status 0 when every file was written (or the folder is empty), 1
    when any was skipped.
    """
    from .engine import Engine

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    skipped: list[tuple[str, str]] = []
    accepted: dict[Path, tuple[bytes, str]] = {}
    for path in files:
        try:
            data, verdict = _check(path, options)
        except OSError as exc:
            skipped.append((path.name, f"cannot read: {exc.strerror or exc}"))
            continue
        if not verdict.accepted or verdict.output_format is None:
            skipped.append((path.name, verdict.message))
            continue
        accepted[path] = (data, verdict.output_format)
    names = output_names({path: fmt for path, (_, fmt) in accepted.items()})
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"cannot create {target}: {exc.strerror or exc}") from None

    engine = Engine(device=device)
    written = 0
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
                   TimeElapsedColumn(), console=err)
    task = bar.add_task(f"{folder} ({options.model.value})", total=len(accepted))
    with bar:
        for index, (path, (data, fmt)) in enumerate(accepted.items()):
            bar.update(task, description=path.name, completed=index)

            def on_progress(done: int, total: int, index: int = index) -> None:
                bar.update(task, completed=index + done / max(total, 1))

            try:
                result = engine.upscale_bytes(data, model=options.model.value, scale=options.scale, output_format=fmt,
                                              quality=quality, tile_size=tile, progress=on_progress,
                                              strength=options.strength)
            except ModelBuildError as exc:
                raise _fail(str(exc)) from None  # no model: no other file would work either
            except (EngineError, ValueError) as exc:
                skipped.append((path.name, str(exc)))
                continue
            (target / names[path]).write_bytes(result.data)
            written += 1
            for warning in result.warnings:
                bar.console.print(f"[yellow]warning:[/] {path.name}: {warning}", highlight=False)
        bar.update(task, description=str(folder), completed=len(accepted))
    err.print(f"{written} of {len(files)} images upscaled into {target}", highlight=False)
    if skipped:
        err.print(f"skipped ({len(skipped)}):", highlight=False)
        for name, reason in skipped:  # one line each, the reason as `upscaler validate` words it
            err.print(f"  {name}: {reason}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED)


# --- models -----------------------------------------------------------------------------------------------

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


# Who made each family of weights, and under which licence (docs/models.md has the sources in full).
FAMILIES = {ESRGAN: ("Real-ESRGAN", "BSD-3-Clause"), CUGAN: ("Real-CUGAN SE", "MIT"),
            None: ("RealSR", "Apache-2.0*")}
LICENCE_NOTE = "* as model catalogues list it; not checked against the upstream LICENSE (docs/models.md)"
NATIVE_NOTE = "the smallest native scale that reaches the asked scale runs, then a Lanczos resize to it"


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One user-facing model as `models list` and docs/engine.md show it."""

    name: str
    family: str
    networks: str  # native scales, and which runs when
    scales: str
    licence: str
    use: str


def model_rows() -> list[ModelRow]:
    """Every model a user can choose (`--model`, x-amz-meta-model), once, in the registry's order."""
    rows = []
    for name, networks in MODEL_NETWORKS.items():
        specs = [MODEL_SPECS[n] for n in networks]
        family, licence = FAMILIES[specs[-1].weights.package]
        native = ", ".join(f"{s.scale}x" for s in specs)
        use = specs[-1].description.removesuffix(f", {specs[-1].scale}x").removesuffix(" (default)")
        rows.append(ModelRow(name, family, native, f"{MIN_SCALE:g}-{MAX_SCALE:g}", licence, use))
    return rows


def models_markdown() -> str:
    """The table docs/engine.md holds between its generated-block markers (a test keeps them equal)."""
    default = Settings().default_model
    lines = ["| model | network | native scales | scales | licence | what it is |", "|---|---|---|---|---|---|"]
    for row in model_rows():
        name = f"`{row.name}`" + (" (default)" if row.name == default else "")
        lines.append(f"| {name} | {row.family} | {row.networks} | {row.scales} | {row.licence} | {row.use} |")
    return "\n".join([*lines, "", f"Native scales: {NATIVE_NOTE}. {LICENCE_NOTE}."]) + "\n"


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size else "-"


@models_app.command("list")
def list_models(
    wide: Annotated[bool, typer.Option("--wide", help="Every network file: precision, path, size, sha256.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="The table docs/engine.md holds.")] = False,
) -> None:
    """The models you can choose (--model, x-amz-meta-model): networks, scales, licence, size, built."""
    if markdown:
        typer.echo(models_markdown(), nl=False)
        return
    model_dir = default_model_dir()
    default = Settings().default_model
    if wide:
        table = Table(title=f"network files in {model_dir}", title_justify="left")
        for column in ("model", "network", "precision", "path", "size", "sha256", "built"):
            table.add_column(column, overflow="fold")
        for name, networks in MODEL_NETWORKS.items():
            for network in networks:
                for prec in PRECISIONS:
                    status = model_status(network, prec, model_dir)
                    table.add_row(name, network, prec, str(status.path), _megabytes(status.size),
                                  status.sha256[:16] or "-", "yes" if status.built else "no")
        Console(width=max(out.width, 160)).print(table)
        return
    table = Table(title=f"models (default {default}; the files: --wide)", title_justify="left",
                  caption=f"native: {NATIVE_NOTE}\n{LICENCE_NOTE}", caption_justify="left")
    for column in ("model", "network", "native", "scales", "licence", "size", "built"):
        table.add_column(column, no_wrap=True)
    for row in model_rows():
        statuses = [model_status(n, p, model_dir) for n in MODEL_NETWORKS[row.name] for p in PRECISIONS]
        fp32 = sum(s.size for s in statuses if s.precision == "fp32")
        built = "yes" if all(s.built for s in statuses) else "no"
        table.add_row(row.name, row.family, row.networks, row.scales, row.licence, _megabytes(fp32), built)
    Console(width=LIST_WIDTH).print(table)
