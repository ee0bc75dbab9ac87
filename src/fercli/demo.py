"""`fer demo`: the whole workflow on the built-in synthetic faces in about a minute on a laptop CPU.

prep -> train -> eval -> confmat -> saliency -> ascent -> audit, every figure plus report.md in one
folder. The faces are cartoons drawn by fercli (a toy, not FER2013), so no download is needed.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from fercli import console
from fercli.defaults import PROJECT

LOCALISATION_PER_CLASS = 3  # test faces per class the demo scores each method on (ig's 64 steps cost ~0.3 s a face)

NEXT_STEPS = """next, on the real FER2013 (see README.md):
  fer prep fer2013.csv                      # or train.csv test.csv, or the image zip
  fer train --recipe cpu                    # a CPU: the best model 19 minutes give (plain `fer train` on a GPU)
  fer eval --split test
  fer predict runs/train/exp/best.safetensors test.csv > submission.csv
  fer saliency --split test --index 3 --out sal.png"""


def run_demo(out: str | Path = "fer-demo", faces: int = 2800, epochs: int = 3, device: str = "auto") -> dict[str, Any]:
    """Run every step into `out`; return the metrics."""
    from fercli.data.prep import prepare
    from fercli.data.prepared import PreparedData
    from fercli.engine.recipe import NO_AUGMENT, build_recipe
    from fercli.engine.train import RunSettings, train
    from fercli.explain.ascent import ascend, ascent_figure, pick_layer
    from fercli.explain.audit import audit_figure, audit_split
    from fercli.explain.regions import synthetic_localisation
    from fercli.explain.saliency import METHODS, explain, pick_faces, saliency_figure
    from fercli.infer.evaluate import confmat_figure, evaluate
    from fercli.infer.model import FerModel
    from fercli.infer.predict import predict_stream
    from fercli.plots import split_source

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "fer-data.safetensors"

    console.info(f"[1/7] prep: {faces} synthetic cartoon faces -> {data}")
    prepare([], str(data), synthetic=faces, seed=1, force=True)  # the demo owns its folder

    console.info(f"[2/7] train: vgg4s for {epochs} epochs (augmentation off: the faces already vary in pose)")
    recipe = build_recipe("cpu", dict(arch="vgg4s", epochs=epochs, batch=32, lr=0.05, **NO_AUGMENT))
    run = train(recipe, RunSettings(data=str(data), device=device, project=str(out / PROJECT), name="demo"))
    model = FerModel.load(Path(run["run_dir"]), device)

    console.info("[3/7] eval on the held-out test split")
    m = evaluate(model, str(data), "test")
    (out / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
    buf = io.StringIO()
    predict_stream(model, [str(data)], buf)
    (out / "predictions.csv").write_text(buf.getvalue())

    console.info("[4/7] confmat")
    confmat_figure(m, out / "confmat.png")

    console.info("[5/7] saliency: grad, smoothgrad, integrated gradients, Grad-CAM")
    d = PreparedData.open(data)
    test = d.indices("test")
    pick = [int(test[np.flatnonzero(d.labels[test] == c)[0]]) for c in (3, 5, 0)]  # a happy, surprised, angry face
    res = explain(model, np.array(d.images[pick]), np.array(d.labels[pick]), list(METHODS), "pred")
    saliency_figure(np.array(d.images[pick]), np.array(d.labels[pick]), res, [f"face {i}" for i in pick],
                    out / "saliency.png", split_source("test", data))  # fmt: skip
    found = synthetic_localisation(model, d, pick_faces(d, "test", None, LOCALISATION_PER_CLASS)[0], faces, 1)[0]
    (out / "localisation.json").write_text(json.dumps(found, indent=2) + "\n")

    console.info("[6/7] ascent: what the last conv layer's first 8 filters respond to")
    name, _ = pick_layer(model.net, "-1")
    imgs = ascend(model, name, list(range(8)), steps=80)
    ascent_figure(imgs, [f"filter {f}" for f in range(8)], f"layer {name}", out / "ascent.png")

    console.info("[7/7] audit: the training faces the model finds least believable")
    tr, suspects = audit_split(model, d, "train", 4)
    audit_figure(np.array(d.images[tr]), suspects, 4, out / "audit.png", source=split_source("train", data))

    from fercli.plots import training_curves

    training_curves(run["history"], out / "curves.png", "vgg4s on synthetic faces")
    _write_report(out, run, m, found)
    console.info(f"\ndone: open {out / 'report.md'} (figures beside it)\n{NEXT_STEPS}")
    console.data_out(str(out / "report.md"))  # the one piece of data: where the report is, even with -q
    return m


def _write_report(out: Path, run: dict[str, Any], m: dict[str, Any], found: dict[str, Any]) -> None:
    from fercli.explain.regions import localisation_table

    rows = "\n".join(
        f"| {c} | {100 * v['precision']:.1f}% | {100 * v['recall']:.1f}% | {100 * v['f1']:.1f}% | {v['support']} |"
        for c, v in m["per_class"].items()
    )
    text = f"""# fercli demo report

Everything here was made by `fer demo` on **synthetic cartoon faces** drawn by fercli itself: a toy
data set for trying the tool, never a stand-in for FER2013. Numbers on real faces are far lower.

## Training

vgg4s, {run["epochs_run"]} epochs, {run["seconds"]:.0f} s. Best validation accuracy
{100 * run["best_valid_acc"]:.1f}% at epoch {run["best_epoch"]}. Run folder: `{run["run_dir"]}`.

![training curves](curves.png)

*How to read it:* the left panel is the loss per epoch (lower is better); the right panel the
accuracy on the training batches and on the validation split. Validation far below training means
overfitting.

## Test split

Accuracy **{100 * m["accuracy"]:.1f}%**, macro-F1 {100 * m["macro_f1"]:.1f}% on {m["n"]} faces.

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

![confusion matrix](confmat.png)

*How to read it:* each row is the true emotion, each column the predicted one. Left: counts; right:
each row as percentages of that true emotion's faces, so the diagonal is each class's recall.
Off-diagonal cells show which emotions the network confuses.

## What the network looks at

![saliency](saliency.png)

*How to read it:* one row per face. `grad` shows how strongly each pixel moves the predicted class
score; `smoothgrad` is the same averaged over noisy copies (less speckle); `ig` (integrated
gradients) is signed: red pixels push towards the class, blue away; `gradcam` is a coarse map of
the regions a 12x12 convolution layer uses. The last panel overlays the grad map on the face.

On these cartoons the generator knows where the evidence is: the brows, eyes and mouth it drew
({100 * found["chance"]:.0f}% of the image). Scored on {found["faces"]} test faces, the share of each
map's attribution that falls there, and how often its strongest pixel does (the pointing game):

{localisation_table(found)}

## What a filter responds to

![gradient ascent](ascent.png)

*How to read it:* each image is synthesised from noise to excite one filter of the last
convolution layer as much as possible: the pattern it looks for (curves, bars, blobs).

## Faces the model disbelieves

![audit](audit.png)

*How to read it:* per given label, the training faces with the highest loss, titled
`given -> predicted (confidence)`. On real data these are the first places to look for wrong labels.

## Next

```
{NEXT_STEPS.split(chr(10), 1)[1]}
```
"""
    (out / "report.md").write_text(text)
