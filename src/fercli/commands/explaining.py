"""What a network looks at and what its data gets wrong: `fer saliency`, `fer ascent`, `fer audit`."""

from __future__ import annotations

from pathlib import Path

import typer

from fercli import console, defaults
from fercli.classes import SPLITS
from fercli.commands.app import (
    CROPS_OPT,
    DATA_OPT,
    DEVICE_OPT,
    MODEL_OPT,
    PROJECT_OPT,
    TTA_OPT,
    app,
    completion,
    loaded,
    opened_data,
    png_out,
)


@app.command()
def saliency(
    index: list[int] = typer.Option(None, "--index", "-i", help="Face index within the split; repeatable."),
    model: Path | None = MODEL_OPT,
    data: Path | None = DATA_OPT,
    split: str = typer.Option(
        "val", help="Split the indices refer to (val by default: test is for the final score).",
        autocompletion=completion(SPLITS),
    ),
    method: str = typer.Option(
        "grad",
        help="grad, smoothgrad, ig, gradcam or all.",
        autocompletion=completion(("grad", "smoothgrad", "ig", "gradcam", "all")),
    ),
    target: str = typer.Option("pred", help="Class to explain: pred, label, one of the model's class names or codes."),
    per_class: int = typer.Option(0, "--per-class", help="A grid of K faces per class instead of --index."),
    out: Path = typer.Option(Path("saliency.png"), "--out", "-o", help="PNG to write.", callback=png_out),
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

    methods = methods_for(method)
    m, d = loaded(model, device, project=project), opened_data(data)
    idx, captions = pick_faces(d, split, index, per_class, m.classes)
    images, labels = np.array(d.images[idx]), face_labels(m.classes, d, idx)
    res = explain(m, images, labels, methods, target)
    from fercli.plots import split_source

    source = split_source(split, d.path)
    if per_class:
        per_class_figure(images, labels, res, out, per_class, source)
    else:
        saliency_figure(images, labels, res, captions, out, source)
    if npy is not None:
        with atomic_path(npy) as tmp, open(tmp, "wb") as f:
            np.save(f, res["maps"])
    console.info(f"wrote {out}" + (f" and {npy}" if npy else ""))


@app.command()
def ascent(
    layer: str = typer.Option("-1", "--layer", "-l", help="Conv layer name or position (-1 last); `list` lists them."),
    filters: str | None = typer.Option(
        None, help="Filters as start:stop or a,b,c (default 0:16); classes with --class-vis (default: all)."
    ),
    steps: int = typer.Option(defaults.ASCENT_STEPS, help="Ascent steps."),
    lr: float = typer.Option(defaults.ASCENT_LR, help="Initial step size (normalised gradient units); decays to 10%."),
    jitter: int = typer.Option(defaults.ASCENT_JITTER, help="Random shift per step, pixels."),
    tv: float = typer.Option(defaults.ASCENT_TV, help="Total-variation penalty weight."),
    blur_every: int = typer.Option(defaults.ASCENT_BLUR_EVERY, help="Blur every N steps (0 = never)."),
    class_vis: bool = typer.Option(False, "--class-vis", help="Maximise class scores instead of filters."),
    model: Path | None = MODEL_OPT,
    out: Path = typer.Option(Path("ascent.png"), "--out", "-o", help="PNG to write.", callback=png_out),
    seed: int = typer.Option(0, help="Seed of the starting noise and the jitter."),
    device: str = DEVICE_OPT,
    project: Path = PROJECT_OPT,
) -> None:
    """Gradient-ascent images: what excites each filter of a layer (or each class)."""
    from fercli.explain.ascent import ascend, ascent_figure, class_labels, conv_layers, parse_filters, pick_layer

    m = loaded(model, device, project=project)
    if layer == "list":
        for name, conv in conv_layers(m.net).items():
            console.data_out(f"{name},{conv.out_channels}")  # module names: identifiers and dots
        return
    if class_vis:
        name, chosen = None, parse_filters(filters or f"0:{len(m.classes)}", len(m.classes))
        labels, title = class_labels(chosen, m.classes), "class visualisation"
    else:
        name, conv = pick_layer(m.net, layer)
        chosen = parse_filters(filters or "0:16", conv.out_channels)
        labels, title = [f"filter {f}" for f in chosen], f"layer {name}"
    from fercli.progress import StepBar

    with StepBar(steps, "ascent") as bar:
        imgs = ascend(m, name, chosen, steps, lr, jitter, tv, blur_every, class_vis, seed, bar.advance)
    ascent_figure(imgs, labels, title, out)
    console.info(f"wrote {out}")


@app.command()
def audit(
    model: Path | None = MODEL_OPT,
    data: Path | None = DATA_OPT,
    split: str = typer.Option("train", help="Split to audit.", autocompletion=completion(SPLITS)),
    top: int = typer.Option(8, help="Suspects per class."),
    out: Path = typer.Option(Path("audit.png"), "--out", "-o", help="Gallery PNG to write.", callback=png_out),
    tta: bool | None = TTA_OPT,
    crops: bool = CROPS_OPT,
    device: str = DEVICE_OPT,
    project: Path = PROJECT_OPT,
) -> None:
    """Faces most likely mislabelled (highest loss under their label): a gallery PNG, and CSV on stdout."""
    import numpy as np

    from fercli.data.crowd import VOTE_COLUMNS
    from fercli.errors import USAGE, FerError
    from fercli.explain.audit import audit_figure, audit_split, crowd_view

    if top < 1:
        raise FerError("--top must be at least 1", USAGE)
    m, d = loaded(model, device, tta, project, crops=crops), opened_data(data)
    classes = m.classes
    idx, rows = audit_split(m, d, split, top)
    from fercli.plots import split_source

    audit_figure(np.array(d.images[idx]), rows, top, out, classes, split_source(split, d.path))
    from fercli.csvrows import line

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
        console.data_out(line([i, d.rows[i], d.source_name(i), classes[r["given"]], classes[r["predicted"]],
                              f"{r['confidence']:.4f}", f"{r['loss']:.4f}"]) + extra)  # fmt: skip
    console.info(f"wrote {out}")
