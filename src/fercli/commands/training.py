"""`fer train` and `fer models`."""

from __future__ import annotations

from pathlib import Path

import typer

from fercli import console
from fercli.classes import LABEL_MODES
from fercli.commands.app import (
    DATA_OPT,
    app,
    completion,
)
from fercli.defaults import PROJECT
from fercli.engine.recipe import PRESETS  # light: no torch, no numpy


@app.command()
def train(
    data: Path | None = DATA_OPT,
    recipe: str = typer.Option(
        "default",
        help="Starting recipe: default (vgg4, for a GPU), study (vgg5, the original study's), cpu (a "
        "19-minute budget on a CPU), or a .json file of recipe fields on a base. See docs/recipes.md.",
        autocompletion=completion(tuple(PRESETS)),
    ),
    arch: str | None = typer.Option(None, help="Network (see `fer models`).", autocompletion=completion("networks")),
    width: float | None = typer.Option(None, help="Channel multiplier of the network."),
    epochs: int | None = typer.Option(None, help="Epochs."),
    time_budget: str | None = typer.Option(
        None, "--time", help="Train for a wall-clock budget instead of epochs: 90s, 20m, 1.5h."
    ),
    batch: int | None = typer.Option(None, help="Images per step."),
    lr: float | None = typer.Option(None, help="Peak learning rate."),
    optimizer: str | None = typer.Option(None, help="sgd (Nesterov), adamw or adam."),
    schedule: str | None = typer.Option(None, help="onecycle, cosine or constant."),
    weight_decay: float | None = typer.Option(None, help="Weight decay (never on BN or biases)."),
    label_smoothing: float | None = typer.Option(None, help="Label smoothing."),
    ema: float | None = typer.Option(None, help="Weight EMA decay per step (0 = off)."),
    augment: bool | None = typer.Option(None, "--augment/--no-augment", help="On-device augmentation on/off."),
    tta: bool | None = typer.Option(None, "--tta/--no-tta", help="Validate with horizontal-flip averaging."),
    seed: int | None = typer.Option(None, help="Seed for init, shuffling, augmentation and dropout."),
    labels: str | None = typer.Option(
        None, help="Targets: fer2013 (the original labels), majority or probability (FER+ crowd votes), auto "
        "(FER+ probability when the data has votes, else fer2013).",
        autocompletion=completion(LABEL_MODES),
    ),
    teacher: list[str] | None = typer.Option(
        None, "--teacher", help="Distil from this model (a checkpoint, run folder or builtin): its predictions on "
        "the train faces take --distill of each target. Repeat for an ensemble."
    ),
    distill: float | None = typer.Option(None, help="Share of each train target the teachers give (default 0.5)."),
    device: str = typer.Option("auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."),
    project: Path = typer.Option(Path(PROJECT), help="Folder holding the runs."),
    name: str = typer.Option("exp", help="Run name; exp, exp2, ... when taken."),
    patience: int | None = typer.Option(
        None, help="Stop after N epochs without a better valid_acc (0 = never; default 0, or the resumed run's)."
    ),
    resume: str | None = typer.Option(None, help="Continue a run: its folder, its last.safetensors, or `last`."),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per epoch on stdout."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network (CUDA)."),
    precision: str = typer.Option(
        "auto",
        help="Training precision: auto (CUDA: bf16, or fp16 with a gradient scaler before compute capability 8; "
        "a CPU: the faster, by a cached probe), fp32, bf16, fp16.",
        autocompletion=completion(("auto", "fp32", "bf16", "fp16")),
    ),
    save_every: int | None = typer.Option(
        None, help="Also save last.safetensors every N steps (default: each epoch's end; a resumed run keeps its own)."
    ),
) -> None:
    """Train a network on a prepared data file; writes a run folder with checkpoints, metrics and curves.

    Several GPUs or machines: torchrun --nproc_per_node N -m fercli train ... (see docs/commands/train.md)."""
    from fercli.engine.recipe import recipe_for
    from fercli.engine.train import RunSettings
    from fercli.engine.train import train as run_training

    options = dict(
        arch=arch, width=width, epochs=epochs, batch=batch, lr=lr, optimizer=optimizer, schedule=schedule,
        weight_decay=weight_decay, label_smoothing=label_smoothing, ema=ema, tta=tta, seed=seed, labels=labels,
        time=time_budget, augment=augment, teachers=teacher or None, distill=distill,
    )  # fmt: skip
    r = recipe_for(recipe, options, resume)
    if arch is None and resume is None:
        console.info(f"using --arch {r.arch} " + ("(default)" if recipe == "default" else f"(from --recipe {recipe})"))
    settings = RunSettings(
        data=str(data) if data else None, device=device, project=str(project), name=name, patience=patience,
        json_lines=json_lines, compile=compile, save_every=save_every, precision=precision,
    )  # fmt: skip
    run_training(r, settings, resume=resume)


@app.command("models")
def list_models(
    json_out: bool = typer.Option(False, "--json", help="JSON on stdout instead of a table."),
    width: float | None = typer.Option(None, help="Show each network at this channel multiplier."),
    detectors: bool = typer.Option(False, "--detectors", help="List the face detectors instead (for --detector)."),
) -> None:
    """List the networks with their parameter count and FLOPs for one 48x48 face (or the face detectors)."""
    import json

    from rich.table import Table

    from fercli.errors import USAGE, FerError
    from fercli.models import describe

    if detectors:
        from fercli.photos.detect import detector_rows

        found = detector_rows()
        if json_out:
            console.data_out(json.dumps(found))
            return
        table = Table(title="face detectors (--detector; auto: the default one)")
        for col in ("name", "default", "available", "summary"):
            table.add_column(col)
        for r in found:
            ready = "yes" if r["available"] else f"no: {r['needs']}"
            table.add_row(r["name"], "yes" if r["default"] else "", ready, r["summary"])
        console.show(table)
        return

    if width is not None and not 0 < width <= 16:
        raise FerError("--width must be in (0, 16]", USAGE)
    rows = describe(width)
    if json_out:
        console.data_out(json.dumps(rows))
        return
    table = Table(title="networks")
    for col, just in (("name", "left"), ("params", "right"), ("GFLOPs", "right"), ("summary", "left")):
        table.add_column(col, justify=just)
    for r in rows:
        table.add_row(r["name"], f"{r['params'] / 1e6:.2f}M", f"{r['gflops']:.3f}", r["summary"])
    console.show(table)
