"""Using a trained model: `fer eval`, `fer predict`, `fer annotate`, `fer confmat`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from fercli import console
from fercli.classes import SPLITS
from fercli.commands.app import (
    CLASSES_OPT,
    CROPS_OPT,
    DATA_OPT,
    DETECTOR_OPT,
    DEVICE_OPT,
    FACES_OPT,
    FORCE_OPT,
    PROJECT_OPT,
    TTA_OPT,
    app,
    completion,
    data_path,
    loaded,
    png_out,
)
from fercli.defaults import CPU_FORWARD, PREDICT_BATCH, VIDEO_SMOOTH


@app.command("eval")
def eval_cmd(
    model: Path | None = typer.Argument(
        None, help="Checkpoint, run folder or builtin (default: the newest run's best.safetensors)."
    ),
    data: Path | None = DATA_OPT,
    split: str = typer.Option("val", help="Split to evaluate: val, test or train.", autocompletion=completion(SPLITS)),
    tta: bool | None = TTA_OPT,
    crops: bool = CROPS_OPT,
    json_out: bool = typer.Option(False, "--json", help="The metrics as one JSON object on stdout."),
    force: bool = FORCE_OPT,
    device: str = DEVICE_OPT,
    project: Path = PROJECT_OPT,
    classes: str = CLASSES_OPT,
) -> None:
    """Accuracy, macro-F1 and per-class precision, recall, F1 and support."""
    import json

    from fercli.infer.evaluate import evaluate, metrics_table

    m = evaluate(loaded(model, device, tta, project, crops=crops), data_path(data), split, force, classes)
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
    crops: bool = CROPS_OPT,
    probs: bool = typer.Option(False, "--probs", help="Add one probability column per class."),
    names: bool = typer.Option(False, "--names", help="Class names instead of codes (0..6 FER2013, 0..7 FER+)."),
    batch: int = typer.Option(PREDICT_BATCH, help=f"Faces a batch (a CPU forwards {CPU_FORWARD} a pass)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to FILE (atomically) instead of stdout."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad rows and images instead of stopping."),
    device: str = DEVICE_OPT,
    faces: str = FACES_OPT,
    detector: str = DETECTOR_OPT,
    classes: str = CLASSES_OPT,
) -> None:
    """Predict emotions; CSV `id,emotion` on stdout (and nothing else there); for images, one row per face:
    `id,face,x,y,w,h,emotion`."""
    from fercli.infer.predict import predict_stream

    m = loaded(model, device, tta, detector=detector, crops=crops)
    kw = dict(probs=probs, names=names, batch=batch, skip_bad=skip_bad, faces=faces, classes=classes)
    if out is None:
        n = predict_stream(m, inputs, sys.stdout, **kw)
    else:
        from fercli.files.atomic import atomic_path
        from fercli.files.safepaths import note_input

        for path in (m.path, *inputs):  # so that `-o` onto any of them is refused before any work
            note_input(path)
        with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
            n = predict_stream(m, inputs, f, **kw)
    console.info(f"predicted {console.plural(n, 'face')}" + (f" into {out}" if out else ""))


@app.command()
def annotate(
    inputs: list[str] = typer.Argument(..., help="Images, folders or zips of images; or one video (mp4, avi, mov)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for the annotated copies."),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Checkpoint, run folder or builtin (default: builtin; or MODEL first, as in "
        "predict: fer annotate MODEL INPUT...)."
    ),
    faces: str = FACES_OPT,
    detector: str = DETECTOR_OPT,
    every: int = typer.Option(1, "--every", help="Video: search every Nth frame (boxes stay drawn until the next)."),
    smooth: int = typer.Option(
        VIDEO_SMOOTH, "--smooth", help="Video: average each face's probabilities over its last N searched frames "
        "(1: off).",
    ),  # fmt: skip
    probs: bool = typer.Option(False, "--probs", help="Add one probability column per class to the CSV."),
    names: bool = typer.Option(False, "--names", help="Class names instead of codes in the CSV."),
    tta: bool | None = TTA_OPT,
    crops: bool = CROPS_OPT,
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad images instead of stopping."),
    device: str = DEVICE_OPT,
    csv_out: Path | None = typer.Option(None, "--csv", help="Write the CSV to FILE (atomically) instead of stdout."),
) -> None:
    """Draw a box, the emotion and probability bars on every face; the CSV of the faces on stdout."""
    from fercli.infer.annotate import annotate as run_annotate
    from fercli.infer.annotate import model_first

    inputs, ref = model_first(inputs, model)
    kw = dict(faces=faces, every=every, smooth=smooth, probs=probs, names=names, skip_bad=skip_bad)
    if csv_out is None:
        run_annotate(inputs, out_dir, loaded(ref, device, tta, detector=detector, crops=crops), out=sys.stdout, **kw)
        return
    from fercli.files.atomic import atomic_path
    from fercli.files.safepaths import note_input

    for path in inputs:  # so that `--csv` onto any of them is refused before any work
        note_input(path)
    with atomic_path(csv_out) as tmp, open(tmp, "w", newline="") as f:
        run_annotate(inputs, out_dir, loaded(ref, device, tta, detector=detector, crops=crops), out=f, **kw)
    console.info(f"wrote {csv_out}")


@app.command()
def confmat(
    model: Path | None = typer.Argument(
        None, help="Checkpoint, run folder or builtin (default: the newest run's best.safetensors)."
    ),
    data: Path | None = DATA_OPT,
    split: str = typer.Option("val", help="Split: val, test or train.", autocompletion=completion(SPLITS)),
    out: Path = typer.Option(Path("confmat.png"), "--out", "-o", help="PNG to write.", callback=png_out),
    normalize: bool = typer.Option(False, "--normalize", help="Only the row-normalised matrix."),
    csv_out: bool = typer.Option(False, "--csv", help="Print the count matrix as CSV on stdout too."),
    tta: bool | None = TTA_OPT,
    crops: bool = CROPS_OPT,
    force: bool = FORCE_OPT,
    device: str = DEVICE_OPT,
    project: Path = PROJECT_OPT,
) -> None:
    """The confusion matrix as a PNG: counts and row-normalised percentages side by side."""
    from fercli.infer.evaluate import confmat_figure, evaluate

    m = evaluate(loaded(model, device, tta, project, crops=crops), data_path(data), split, force)
    confmat_figure(m, out, normalize_only=normalize)
    if csv_out:
        from fercli.csvrows import line

        console.data_out(line(["true\\predicted", *m["classes"]]))
        for c, counts in zip(m["classes"], m["confusion"]):
            console.data_out(line([c, *counts]))
    console.info(f"accuracy {100 * m['accuracy']:.2f}% on {m['split']}; wrote {out}")


@app.command()
def export(
    model: Path | None = typer.Argument(
        None, help="Checkpoint, run folder or builtin (default: the newest run's best.safetensors)."
    ),
    out: Path = typer.Option(Path("model.onnx"), "--out", "-o", help="ONNX file to write."),
    classes: str = CLASSES_OPT,
    tta: bool | None = TTA_OPT,
    crops: bool = CROPS_OPT,
    project: Path = PROJECT_OPT,
) -> None:
    """Write the model as one ONNX file: uint8 faces [N,48,48] in, probabilities out, the normalisation
    and flip-averaging inside, class names in its metadata; checked with onnxruntime. Needs fercli[onnx]."""
    from fercli.files.safepaths import note_input

    m = loaded(model, "cpu", tta, project, crops=crops)  # exported from the CPU: the graph does not depend on a GPU
    note_input(m.path)
    m.export(out, classes)
    console.info(f"wrote {out}: {m.arch}, {len(m.class_set(classes)[0])} classes, input faces uint8 [N,48,48]")
