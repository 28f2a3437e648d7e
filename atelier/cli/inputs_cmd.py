"""`atelier inputs add FILE`: check an image and keep it in the inputs store; print the name jobs use."""

from __future__ import annotations

from pathlib import Path

import typer

from atelier.tools.inputs import InputStore
from atelier.tools.settings import load_settings

__all__ = ["inputs_app"]

inputs_app = typer.Typer(help="Input images for img2img, upscale and edits (the inputs store).", no_args_is_help=True)


@inputs_app.command("add")
def add(files: list[Path] = typer.Argument(..., help="PNG, JPEG or WebP files on this machine.")) -> None:
    """Store each image (checked: format, size, pixels) and print `NAME  FILE`; give NAME as input_image."""
    store = InputStore(load_settings())
    for path in files:
        stored = store.put_file(path)
        typer.echo(f"{stored.name}\t{path}  ({stored.width}×{stored.height} {stored.format})")
