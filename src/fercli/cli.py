"""The `fer` command line: each command parses its options and delegates to the core.

Nothing heavy is imported at module level, so that `fer --help` stays instant: torch, numpy and
matplotlib are imported inside the commands that need them.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

import typer

from fercli import __version__, console
from fercli.classes import LABEL_MODES, SPLITS
from fercli.engine.recipe import PRESETS  # light: no torch, no numpy (fer --help stays instant)
from fercli.errors import INTERRUPTED, FerError

app = typer.Typer(
    name="fer",
    help="Facial expression recognition on FER2013-style data: prep, train, eval, predict, explain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = {"on": bool(os.environ.get("FER_DEBUG"))}


def _complete(values: tuple[str, ...] | str):
    """Shell completion of an option's values: a fixed tuple, or "networks" (the registry, read on demand)."""

    def complete(incomplete: str) -> list[str]:
        if values == "networks":
            from fercli.models import names

            choices = names()
        else:
            choices = list(values)
        return [v for v in choices if v.startswith(incomplete)]

    return complete


# Options that several commands share, declared once.
DEVICE_OPT = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps.")
PROJECT_OPT = typer.Option(Path("runs"), help="Where to look for the newest run.")
DATA_OPT = typer.Option(None, "--data", "-d", help="Prepared data file (default fer-data.safetensors).")
FORCE_OPT = typer.Option(False, "--force", help="Score a split even when it holds this model's training faces.")
TTA_OPT = typer.Option(
    None, "--tta/--no-tta", help="Average over a horizontal flip (default: as the model was validated in training)."
)
MODEL_OPT = typer.Option(
    None, "--model", "-m", help="Checkpoint, run folder or builtin (default: the newest run's best)."
)
FACES_OPT = typer.Option(
    "auto", "--faces", help="Images: auto (find faces unless the image is a face crop), detect (always find "
    "faces; needs fercli[faces]) or whole (the whole image is one face).",
    autocompletion=_complete(("auto", "detect", "whole")),
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


def _data_path(data: Path | None) -> str:
    from fercli.data.prepared import DEFAULT_DATA

    if data is None:
        console.default_used("--data", DEFAULT_DATA)
        return DEFAULT_DATA
    return str(data)


@app.command()
def prep(
    sources: list[str] = typer.Argument(
        None, help="CSV files (fer2013.csv, train.csv, test.csv; gzip ok), image folders or zips, or - for stdin."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Prepared file to write (default fer-data.safetensors)."),
    val_frac: float = typer.Option(0.1, help="Fraction of train carved out as val when no source has a val split."),
    seed: int = typer.Option(0, help="Seed for the val carve and for --synthetic."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad rows and images instead of stopping."),
    synthetic: int = typer.Option(0, help="Add N built-in synthetic cartoon faces (a toy set, not FER2013)."),
    protocol: str = typer.Option(
        "auto",
        help="FER2013 splits: standard (PublicTest is val, PrivateTest test), holdout (PublicTest is test, val "
        "carved from Training), auto (standard when PrivateTest is present, else holdout).",
        autocompletion=_complete(("auto", "standard", "holdout")),
    ),
) -> None:
    """Read FER2013 in any layout into one prepared data file that the other commands open instantly."""
    from fercli.data.prep import counts_table, prepare, votes_table
    from fercli.data.prepared import DEFAULT_DATA

    target = str(out or DEFAULT_DATA)
    meta = prepare(sources or [], target, val_frac=val_frac, seed=seed, skip_bad=skip_bad, synthetic=synthetic,
                   protocol=protocol)  # fmt: skip
    console.show(counts_table(meta))
    if meta.get("votes"):
        console.show(votes_table(meta))
    console.info(f"wrote {target}" + (" (the default --out)" if out is None else ""))


@app.command()
def train(
    data: Path | None = DATA_OPT,
    recipe: str = typer.Option(
        "default",
        help="Starting recipe: default (vgg4, for a GPU), study (vgg5, the original study's), cpu (a "
        "19-minute budget on a CPU), or a .json file of recipe fields on a base. See docs/recipes.md.",
        autocompletion=_complete(tuple(PRESETS)),
    ),
    arch: str | None = typer.Option(None, help="Network (see `fer models`).", autocompletion=_complete("networks")),
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
        autocompletion=_complete(LABEL_MODES),
    ),
    device: str = typer.Option("auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."),
    project: Path = typer.Option(Path("runs"), help="Folder holding the runs."),
    name: str = typer.Option("exp", help="Run name; exp, exp2, ... when taken."),
    patience: int = typer.Option(0, help="Stop after N epochs without a better valid_acc (0 = never)."),
    resume: str | None = typer.Option(None, help="Continue a run: its folder, its last.safetensors, or `last`."),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per epoch on stdout."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network (CUDA)."),
    precision: str = typer.Option(
        "auto",
        help="Training precision: auto (CUDA: bf16, or fp16 with a gradient scaler before compute capability 8; "
        "a CPU: the faster, by a cached probe), fp32, bf16, fp16.",
        autocompletion=_complete(("auto", "fp32", "bf16", "fp16")),
    ),
    save_every: int | None = typer.Option(
        None, help="Also save last.safetensors every N steps (default: each epoch's end; a resumed run keeps its own)."
    ),
) -> None:
    """Train a network on a prepared data file; writes a run folder with checkpoints, metrics and curves.

    Several GPUs or machines: torchrun --nproc_per_node N -m fercli train ... (see docs/commands/train.md)."""
    from fercli.engine.pace import parse_duration
    from fercli.engine.recipe import NO_AUGMENT, build_recipe
    from fercli.engine.train import RunSettings
    from fercli.engine.train import train as run_training
    from fercli.errors import USAGE, FerError

    if time_budget is not None and epochs is not None:
        raise FerError("give --time or --epochs, not both (--time fixes the step count from the measured speed)",
                       USAGE)  # fmt: skip
    overrides = dict(
        arch=arch, width=width, epochs=epochs, batch=batch, lr=lr, optimizer=optimizer, schedule=schedule,
        weight_decay=weight_decay, label_smoothing=label_smoothing, ema=ema, tta=tta, seed=seed, labels=labels,
        time=parse_duration(time_budget) if time_budget is not None else None,
    )  # fmt: skip
    if augment is False:
        overrides.update(NO_AUGMENT)
    if resume is not None and any(v is not None for v in overrides.values()):
        console.warn("--resume continues the run's own recipe; the recipe options given are ignored")
    r = build_recipe(recipe, overrides)
    from fercli.models import spec

    spec(r.arch)  # an unknown network fails before any data is read
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
) -> None:
    """List the networks with their parameter count and FLOPs for one 48x48 face."""
    import json

    from rich.table import Table

    from fercli.errors import USAGE, FerError
    from fercli.models import describe

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


@app.command("eval")
def eval_cmd(
    model: Path | None = typer.Argument(
        None, help="Checkpoint or run folder (default: the newest run's best.safetensors)."
    ),
    data: Path | None = DATA_OPT,
    split: str = typer.Option("val", help="Split to evaluate: val, test or train.", autocompletion=_complete(SPLITS)),
    tta: bool | None = TTA_OPT,
    json_out: bool = typer.Option(False, "--json", help="The metrics as one JSON object on stdout."),
    force: bool = FORCE_OPT,
    device: str = DEVICE_OPT,
    project: Path = PROJECT_OPT,
) -> None:
    """Accuracy, macro-F1 and per-class precision, recall, F1 and support."""
    import json

    from fercli.files.runs import resolve_checkpoint
    from fercli.infer.evaluate import evaluate, metrics_table

    m = evaluate(resolve_checkpoint(model, project), _data_path(data), split, tta, device, force)
    console.show(metrics_table(m))
    if json_out:
        console.data_out(json.dumps(m))


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Checkpoint (.safetensors), run folder, or builtin (the shipped model)."),
    inputs: list[str] = typer.Argument(
        ..., help="CSV (any layout, or - for stdin), prepared file, image or photo, folder or zip."
    ),
    tta: bool | None = TTA_OPT,
    probs: bool = typer.Option(False, "--probs", help="Add one probability column per class."),
    names: bool = typer.Option(False, "--names", help="Class names instead of codes (0..6 FER2013, 0..7 FER+)."),
    batch: int = typer.Option(256, help="Faces per forward pass."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to FILE (atomically) instead of stdout."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad rows and images instead of stopping."),
    device: str = DEVICE_OPT,
    faces: str = FACES_OPT,
) -> None:
    """Predict emotions; CSV `id,emotion` on stdout (and nothing else there); for images, one row per face:
    `id,face,x,y,w,h,emotion`."""
    from fercli.files.runs import resolve_checkpoint
    from fercli.infer.predict import predict_stream

    ckpt = resolve_checkpoint(model)
    kw = dict(tta=tta, probs=probs, names=names, batch=batch, device=device, skip_bad=skip_bad, faces=faces)
    if out is None:
        n = predict_stream(ckpt, inputs, sys.stdout, **kw)
    else:
        from fercli.files.atomic import atomic_path

        with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
            n = predict_stream(ckpt, inputs, f, **kw)
    console.info(f"predicted {n} faces" + (f" into {out}" if out else ""))


@app.command()
def annotate(
    inputs: list[str] = typer.Argument(..., help="Images, folders or zips of images; or one video (mp4, avi, mov)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for the annotated copies."),
    model: Path = typer.Option(Path("builtin"), "--model", "-m", help="Checkpoint, run folder or builtin."),
    faces: str = FACES_OPT,
    every: int = typer.Option(1, "--every", help="Video: search every Nth frame (boxes stay drawn until the next)."),
    probs: bool = typer.Option(False, "--probs", help="Add one probability column per class to the CSV."),
    names: bool = typer.Option(False, "--names", help="Class names instead of codes in the CSV."),
    tta: bool | None = TTA_OPT,
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad images instead of stopping."),
    device: str = DEVICE_OPT,
) -> None:
    """Draw a box, the emotion and probability bars on every face; the CSV of the faces on stdout."""
    from fercli.photos.annotate import annotate as run_annotate

    run_annotate(inputs, out_dir, str(model), faces=faces, every=every, probs=probs, names=names, tta=tta,
                 skip_bad=skip_bad, device=device, out=sys.stdout)  # fmt: skip


@app.command()
def confmat(
    model: Path | None = typer.Argument(
        None, help="Checkpoint or run folder (default: the newest run's best.safetensors)."
    ),
    data: Path | None = DATA_OPT,
    split: str = typer.Option("val", help="Split: val, test or train.", autocompletion=_complete(SPLITS)),
    out: Path = typer.Option(Path("confmat.png"), "--out", "-o", help="PNG to write."),
    normalize: bool = typer.Option(False, "--normalize", help="Only the row-normalised matrix."),
    csv_out: bool = typer.Option(False, "--csv", help="Print the count matrix as CSV on stdout too."),
    tta: bool | None = TTA_OPT,
    force: bool = FORCE_OPT,
    device: str = DEVICE_OPT,
    project: Path = PROJECT_OPT,
) -> None:
    """The confusion matrix as a PNG: counts and row-normalised percentages side by side."""
    from fercli.files.runs import resolve_checkpoint
    from fercli.infer.evaluate import confmat_figure, evaluate

    m = evaluate(resolve_checkpoint(model, project), _data_path(data), split, tta, device, force)
    confmat_figure(m, out, normalize_only=normalize)
    if csv_out:
        console.data_out("true\\predicted," + ",".join(m["classes"]))
        for c, row in zip(m["classes"], m["confusion"]):
            console.data_out(c + "," + ",".join(map(str, row)))
    console.info(f"accuracy {100 * m['accuracy']:.2f}% on {m['split']}; wrote {out}")


def _load_model(model: Path | None, project: Path, device: str):
    """MODEL (default: newest run's best) on the chosen device: (network, metadata, device)."""
    from fercli.engine.device import pick_device
    from fercli.files.checkpoint import load_model
    from fercli.files.runs import resolve_checkpoint

    dev = pick_device(device, announce=False)
    net, meta = load_model(resolve_checkpoint(model, project), dev)
    return net, meta, dev


def _model_and_data(model: Path | None, data: Path | None, project: Path, device: str):
    """_load_model plus the prepared data (default path): (network, metadata, data, device)."""
    from fercli.data.prepared import PreparedData

    net, meta, dev = _load_model(model, project, device)
    return net, meta, PreparedData.open(_data_path(data)), dev


@app.command()
def saliency(
    index: list[int] = typer.Option(None, "--index", "-i", help="Face index within the split; repeatable."),
    model: Path | None = MODEL_OPT,
    data: Path | None = DATA_OPT,
    split: str = typer.Option("val", help="Split the indices refer to.", autocompletion=_complete(SPLITS)),
    method: str = typer.Option(
        "grad",
        help="grad, smoothgrad, ig, gradcam or all.",
        autocompletion=_complete(("grad", "smoothgrad", "ig", "gradcam", "all")),
    ),
    target: str = typer.Option("pred", help="Class to explain: pred, label, one of the model's class names or codes."),
    per_class: int = typer.Option(0, "--per-class", help="A grid of K faces per class instead of --index."),
    out: Path = typer.Option(Path("saliency.png"), "--out", "-o", help="PNG to write."),
    npy: Path | None = typer.Option(
        None, "--npy", help="Also write the raw maps (faces x methods x 48 x 48, .npy) here."
    ),
    device: str = DEVICE_OPT,
    project: Path = PROJECT_OPT,
) -> None:
    """Saliency maps: which pixels move the class score (grad, smoothgrad, integrated gradients, Grad-CAM)."""
    import numpy as np

    from fercli.explain.saliency import explain, face_labels, methods_for, per_class_figure, pick_faces, saliency_figure
    from fercli.files.atomic import atomic_path
    from fercli.files.checkpoint import classes_of

    methods = methods_for(method)
    net, meta, d, dev = _model_and_data(model, data, project, device)
    classes = classes_of(meta)
    idx, captions = pick_faces(d, split, index, per_class, classes)
    images, labels = np.array(d.images[idx]), face_labels(classes, d, idx)
    res = explain(net, meta, images, labels, methods, target, dev)
    if per_class:
        per_class_figure(images, labels, res, out, per_class)
    else:
        saliency_figure(images, labels, res, captions, out)
    if npy is not None:
        with atomic_path(npy) as tmp, open(tmp, "wb") as f:
            np.save(f, res["maps"])
    console.info(f"wrote {out}" + (f" and {npy}" if npy else ""))


@app.command()
def ascent(
    layer: str = typer.Option("-1", "--layer", "-l", help="Conv layer name or position (-1 last); `list` lists them."),
    filters: str = typer.Option("0:16", help="Filters as start:stop or a,b,c (classes with --class-vis)."),
    steps: int = typer.Option(200, help="Ascent steps."),
    lr: float = typer.Option(0.1, help="Initial step size (normalised gradient units); decays to 10%."),
    jitter: int = typer.Option(2, help="Random shift per step, pixels."),
    tv: float = typer.Option(0.05, help="Total-variation penalty weight."),
    blur_every: int = typer.Option(4, help="Blur every N steps (0 = never)."),
    class_vis: bool = typer.Option(False, "--class-vis", help="Maximise class scores instead of filters."),
    model: Path | None = MODEL_OPT,
    out: Path = typer.Option(Path("ascent.png"), "--out", "-o", help="PNG to write."),
    seed: int = typer.Option(0, help="Seed of the starting noise and the jitter."),
    device: str = DEVICE_OPT,
    project: Path = PROJECT_OPT,
) -> None:
    """Gradient-ascent images: what excites each filter of a layer (or each class)."""
    from fercli.explain.ascent import ascend, ascent_figure, class_labels, conv_layers, parse_filters, pick_layer

    net, meta, dev = _load_model(model, project, device)
    if layer == "list":
        for name, conv in conv_layers(net).items():
            console.data_out(f"{name},{conv.out_channels}")
        return
    if class_vis:
        from fercli.files.checkpoint import classes_of

        classes = classes_of(meta)
        name, chosen = None, parse_filters(filters if filters != "0:16" else f"0:{len(classes)}", len(classes))
        labels, title = class_labels(chosen, classes), "class visualisation"
    else:
        name, conv = pick_layer(net, layer)
        chosen = parse_filters(filters, conv.out_channels)
        labels, title = [f"filter {f}" for f in chosen], f"layer {name}"
    from fercli.progress import StepBar

    with StepBar(steps, "ascent") as bar:
        imgs = ascend(net, meta, name, chosen, steps, lr, jitter, tv, blur_every, class_vis, seed, dev, bar.advance)
    ascent_figure(imgs, labels, title, out)
    console.info(f"wrote {out}")


@app.command()
def audit(
    model: Path | None = MODEL_OPT,
    data: Path | None = DATA_OPT,
    split: str = typer.Option("train", help="Split to audit.", autocompletion=_complete(SPLITS)),
    top: int = typer.Option(8, help="Suspects per class."),
    out: Path = typer.Option(Path("audit.png"), "--out", "-o", help="Gallery PNG to write."),
    tta: bool | None = TTA_OPT,
    device: str = DEVICE_OPT,
    project: Path = PROJECT_OPT,
) -> None:
    """Faces most likely mislabelled (highest loss under their label): a gallery PNG, and CSV on stdout."""
    import numpy as np

    from fercli.data.crowd import VOTE_COLUMNS
    from fercli.errors import USAGE, FerError
    from fercli.explain.audit import audit_figure, audit_split, crowd_view
    from fercli.files.checkpoint import classes_of

    if top < 1:
        raise FerError("--top must be at least 1", USAGE)
    net, meta, d, dev = _model_and_data(model, data, project, device)
    classes = classes_of(meta)
    idx, rows = audit_split(net, meta, d, split, top, dev, tta)
    audit_figure(np.array(d.images[idx]), rows, top, out, classes)
    from fercli.infer.predict import csv_field

    # With FER+ votes: what the crowd voted for most, and with what share of its votes.
    votes = d.votes[idx[[r["i"] for r in rows]]] if d.votes is not None and rows else None
    crowd = crowd_view(votes) if votes is not None else None
    header = "index,source_row,source,given,predicted,confidence,loss"
    console.data_out(header + (",crowd,crowd_share" if crowd else ""))
    for k, r in enumerate(rows):
        i = idx[r["i"]]
        extra = ""
        if crowd is not None:  # empty cells for a face without votes
            extra = f",{VOTE_COLUMNS[crowd[0][k]]},{crowd[1][k]:.2f}" if votes[k].sum() else ",,"
        console.data_out(f"{i},{d.rows[i]},{csv_field(d.source_name(i))},{classes[r['given']]},"
                         f"{classes[r['predicted']]},{r['confidence']:.4f},{r['loss']:.4f}{extra}")  # fmt: skip
    console.info(f"wrote {out}")


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


GLOBAL_FLAGS = {"-q": "--quiet", "--quiet": "--quiet", "--debug": "--debug"}


def _hoist_global_flags(argv: list[str]) -> list[str]:
    """Let `--quiet`/`-q`, `--debug` and `--threads N` stand anywhere (`fer prep x.csv -q`), as users type them."""
    cut = argv.index("--") if "--" in argv else len(argv)
    head, rest, valued = argv[:cut], [], []
    i = 0
    while i < len(head):
        a = head[i]
        if a == "--threads" and i + 1 < len(head):
            valued += head[i : i + 2]
            i += 2
            continue
        if a.startswith("--threads="):
            valued.append(a)
        else:
            rest.append(a)
        i += 1
    flags = sorted({GLOBAL_FLAGS[a] for a in rest if a in GLOBAL_FLAGS})
    return flags + valued + [a for a in rest if a not in GLOBAL_FLAGS] + argv[cut:]


def main() -> NoReturn:
    """Console-script entry: run the app, map FerError to its exit code, keep pipes quiet."""
    if hasattr(signal, "SIGPIPE"):
        # A reader that goes away (`fer predict ... | head`) ends us as it ends any Unix filter:
        # silently, status 141. Files written with -o are never pipes, so no output is cut short.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _exit(_run())


def _command():
    """The click command behind `app`, with help metavars people read: nothing after a flag (`--tta`, not
    `--tta <bool>`, which invites `--tta true`), and N, X, PATH or TEXT instead of Python type names."""
    import typer.main

    cmd = typer.main.get_command(app)
    groups = [cmd, *getattr(cmd, "commands", {}).values()]
    for c in groups:
        for p in c.params:
            if p.metavar is not None:
                continue
            if getattr(p, "is_flag", False):
                p.metavar = ""
                continue
            kind = str(getattr(getattr(p, "type_descriptor", None), "annotation", ""))
            word = next((w for key, w in (("int", "N"), ("float", "X"), ("Path", "PATH")) if key in kind), "TEXT")
            if p.param_type_name == "option":
                p.metavar = word
            else:  # an argument: its name column says it all
                p.metavar = p.name.upper()
                p.display_type_rich = lambda ctx: None
                usage = p.metavar + ("..." if p.nargs != 1 else "")
                p.get_usage_pieces = lambda ctx, u=usage, req=p.required: [u if req else f"[{u}]"]
        make_help = c.get_help_option

        def help_option(ctx, make_help=make_help):
            opt = make_help(ctx)
            if opt is not None:
                opt.metavar = ""
            return opt

        c.get_help_option = help_option
    return cmd


def _run() -> int:
    try:
        code = _command().main(args=_hoist_global_flags(sys.argv[1:]), prog_name="fer", standalone_mode=False)
        return code if isinstance(code, int) else 0  # click returns typer.Exit's code here
    except FerError as e:
        if _debug["on"]:
            raise
        if str(e):  # empty: already said (another torchrun rank)
            (console.stopped if e.code == INTERRUPTED else console.error)(str(e))
        return e.code
    except BrokenPipeError:
        # The reader went away (`fer predict ... | head`): stop quietly, as a SIGPIPE'd tool does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        console.stopped("interrupted")
        return INTERRUPTED
    except Exception as e:
        # Typer's (vendored) click raises usage errors and aborts; they know how to show themselves.
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            return e.exit_code
        if type(e).__name__ == "Abort":
            console.error("aborted")
            return INTERRUPTED
        raise


def _exit(code: int) -> NoReturn:
    """End the process with `code`; a torchrun rank skips the interpreter's shutdown.

    After the last collective, gloo's worker thread may still be releasing that operation's tensors
    when the main thread reaches interpreter shutdown; the thread then takes the GIL during
    finalization and the process aborts (SIGABRT, "terminate called without an active exception",
    the rank seen as failed by torchrun; pytorch/pytorch#179291). Two-process gloo jobs on a 2-core
    CPU machine (`bench/torchrun_exit.py` and its earlier form): 6 of 76 aborted ending through the
    interpreter's shutdown, 0 of 114 ending here. Every file fer writes is closed (renamed into
    place) before this point, so only the standard streams need flushing.
    """
    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1"):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a reader that went away, or a closed stream
                pass
        os._exit(code)
    sys.exit(code)
