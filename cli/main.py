"""`upscaler`: engine, validation and local stack commands in one console script."""

from __future__ import annotations

import typer

from cli.doctor import doctor
from cli.submit import submit
from functions.intake.cli import validate
from gpu_batch.engine.cli import models_app, upscale
from local_stack.cli import demo, local_app

app = typer.Typer(
    name="upscaler",
    help="Real-ESRGAN image upscaling: run the engine, validate uploads, run the whole pipeline locally.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command("upscale")(upscale)
app.command("validate")(validate)
app.command("demo")(demo)
app.command("doctor")(doctor)
app.command("submit")(submit)
app.add_typer(models_app, name="models")
app.add_typer(local_app, name="local")


if __name__ == "__main__":
    app()
