"""The `upscaler` command line: one Typer app composed from each component's commands."""
