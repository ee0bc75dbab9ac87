"""`fer demo`."""

from __future__ import annotations

from pathlib import Path

import typer

from fercli.commands.app import (
    DEVICE_OPT,
    app,
)


@app.command()
def demo(
    out: Path = typer.Option(Path("fer-demo"), "--out", "-o", help="Folder for the data, run, figures and report."),
    faces: int = typer.Option(2800, help="Synthetic faces to draw."),
    epochs: int = typer.Option(3, help="Training epochs."),
    device: str = DEVICE_OPT,
) -> None:
    """The whole workflow on built-in synthetic faces in about a minute: every figure and a report."""
    from fercli.demo import run_demo

    run_demo(out, faces=faces, epochs=epochs, device=device)
