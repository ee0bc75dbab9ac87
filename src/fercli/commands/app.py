"""The Typer app, its global options, and the options and helpers several commands share.

Nothing heavy at module level: `fer --help` stays instant.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from fercli import console
from fercli.defaults import PROJECT
from fercli.version import __version__

app = typer.Typer(
    name="fer",
    help="Facial expression recognition on FER2013-style data: prep, train, eval, predict, explain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = {"on": bool(os.environ.get("FER_DEBUG"))}


def debug_on() -> bool:
    """--debug or FER_DEBUG: let errors show their traceback."""
    return _debug["on"]


def completion(values: tuple[str, ...] | str):
    """Shell completion of an option's values: a fixed tuple, or "networks" (the registry, read on demand)."""

    def complete(incomplete: str) -> list[str]:
        if values == "networks":
            from fercli.models import names

            choices = names()
        else:
            choices = list(values)
        return [v for v in choices if v.startswith(incomplete)]

    return complete


def png_out(value: Path | None) -> Path | None:
    """Option callback: a figure's --out must name a PNG (checked before any work is done)."""
    from fercli.plots import check_png

    return value if value is None else check_png(value)


# Options that several commands share, declared once.
DEVICE_OPT = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps.")
PROJECT_OPT = typer.Option(Path(PROJECT), help="Where to look for the newest run.")
DATA_OPT = typer.Option(None, "--data", "-d", help="Prepared data file (default fer-data.safetensors).")
FORCE_OPT = typer.Option(False, "--force", help="Score a split even when it holds this model's training faces.")
TTA_OPT = typer.Option(
    None, "--tta/--no-tta", help="Average over a horizontal flip (default: as the model was validated in training)."
)
CROPS_OPT = typer.Option(
    False, "--tta-crops", help="Average over the face, its mirror and four 1-pixel shifts of each (10 views, "
    "5x the forward passes of --tta)."
)  # fmt: skip
MODEL_OPT = typer.Option(
    None, "--model", "-m", help="Checkpoint, run folder or builtin (default: the newest run's best)."
)
CLASSES_OPT = typer.Option(
    "model",
    "--classes",
    help="model: the checkpoint's own classes; fer2013: a FER+ model's probabilities mapped onto FER2013's 7 "
    "(contempt into angry), for FER2013 submissions and labels.",
    autocompletion=completion(("model", "fer2013")),
)
DETECTOR_OPT = typer.Option(
    "auto", "--detector", help="Face detector for photos and video: auto (centerface where OpenCV runs it, else "
    "haar), centerface (a CNN) or haar (lighter, frontal faces). `fer models --detectors` lists them.",
    autocompletion=completion(("auto", "centerface", "haar")),
)  # fmt: skip
FACES_OPT = typer.Option(
    "auto", "--faces", help="Images: auto (find faces unless the image is a face crop), detect (always find "
    "faces; needs fercli\\[faces]) or whole (the whole image is one face).",
    autocompletion=completion(("auto", "detect", "whole")),
)  # fmt: skip


def _version(value: bool) -> None:
    if value:
        print(f"fercli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing on stderr but errors."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback on errors (or set FER_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for torch (or FER_THREADS; default: the CPUs this process may use)."
    ),
) -> None:
    from fercli.engine.threads import configure

    console.reset(quiet=quiet)
    _debug["on"] = _debug["on"] or debug
    configure(threads)  # before any command imports torch


def data_path(data: Path | None) -> str:
    from fercli.data.prepared import DEFAULT_DATA

    if data is None:
        console.default_used("--data", DEFAULT_DATA)
        return DEFAULT_DATA
    return str(data)


def loaded(model: str | Path | None, device: str, tta: bool | None = None, project: Path = Path(PROJECT),
           detector: str = "auto", crops: bool = False):  # fmt: skip
    """MODEL as users type it (a checkpoint, run folder, builtin; None: the newest run's best), loaded
    once: the FerModel every command that uses a model works with. `tta`, `crops`: --tta/--no-tta and
    --tta-crops."""
    from fercli.errors import USAGE, FerError
    from fercli.infer.model import FerModel

    if crops and tta is False:
        raise FerError("--tta-crops and --no-tta ask for opposite things: give one of them", USAGE)
    return FerModel.load(model, device, "crops" if crops else tta, project, detector)


def opened_data(data: Path | None):
    """--data (default path) opened: the PreparedData."""
    from fercli.data.prepared import PreparedData

    return PreparedData.open(data_path(data))
