"""`fer eval` and `fer confmat`: metrics of a checkpoint on a split of a prepared file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fercli.classes import CLASSES
from fercli.errors import FerError

if TYPE_CHECKING:
    from fercli.infer.model import FerModel


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int = len(CLASSES)) -> np.ndarray:
    """[k,k] counts: rows are the true class, columns the predicted one."""
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def metrics_from_confusion(cm: np.ndarray, classes: tuple[str, ...] = CLASSES) -> dict[str, Any]:
    tp = np.diag(cm).astype(float)
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / max(1, cm.sum())),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "n": int(cm.sum()),
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "classes": list(classes),
        "confusion": cm.tolist(),
    }


def evaluate(model: FerModel, data_path: str, split: str = "val", force: bool = False,
             classes: str = "model") -> dict[str, Any]:  # fmt: skip
    """Accuracy, macro-F1 and per-class precision/recall/F1/support of a loaded model on one split.

    A model of FER2013's classes is scored against the FER2013 labels; one of FER+'s against the crowd's
    majority, on the faces that have a clear one (as the FER+ paper reports). When the data has votes,
    "crowd" says how much of the crowd's vote the predicted class got on average. `classes` fer2013 scores
    a FER+ model's probabilities, mapped onto FER2013's classes (crowd.class_set), against FER2013's labels."""
    from fercli.data import crowd
    from fercli.data.leaks import check_split
    from fercli.data.prepared import PreparedData

    data = PreparedData.open(data_path)
    names = model.class_set(classes)[0]
    idx, truth = crowd.scored_faces(names, data, split)
    if not len(idx):
        what = "labeled faces" if names == CLASSES else "faces with a clear FER+ majority"
        raise FerError(f"{data_path}: the {split} split has no {what} to evaluate on")
    seen = check_split(model.path, model.meta, data, idx, split, force)
    probs = model.predict(data.images[idx], classes)
    pred = probs.argmax(1)
    out = metrics_from_confusion(confusion(truth, pred, len(names)), names)
    out.update({"model": str(model.path), "data": str(data_path), "split": split, "tta": model.tta,
                "labels": "fer2013" if names == CLASSES else "ferplus-majority"})  # fmt: skip
    if seen is not None:
        out["trained_faces"] = seen.as_json()
    if data.votes is not None:
        votes = np.asarray(data.votes[idx])
        voted = votes.sum(1) > 0
        if voted.any():
            share = crowd.crowd_share(votes[voted], crowd.vote_columns(names)[pred[voted]])
            out["crowd"] = {"mean_share": float(share.mean()), "faces": int(voted.sum())}
    return out


def metrics_table(m: dict[str, Any]):
    from rich.table import Table

    against = " against the FER+ majority" if m.get("labels") == "ferplus-majority" else ""
    title = (f"{m['split']}: accuracy {100 * m['accuracy']:.2f}%{against}, macro-F1 {100 * m['macro_f1']:.2f}% "
             f"({m['n']} faces)")  # fmt: skip
    if "crowd" in m:
        title += f"\nthe crowd gave the predicted class {100 * m['crowd']['mean_share']:.1f}% of its votes on average"
    table = Table(title=title)
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c, row in m["per_class"].items():
        table.add_row(c, *(f"{100 * row[k]:.1f}%" for k in ("precision", "recall", "f1")), str(row["support"]))
    return table


def confmat_figure(m: dict[str, Any], path: str | os.PathLike, normalize_only: bool = False) -> None:
    """Counts and row-normalised percentages side by side (or only the latter), class names on both axes."""
    from fercli.plots import pyplot, save_figure, split_source

    plt = pyplot()
    cm = np.asarray(m["confusion"])
    classes = m.get("classes", CLASSES)
    rows = cm.sum(1, keepdims=True)
    pct = np.divide(100 * cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    panels = [("recall per true class (%)", pct, "{:.0f}")]
    if not normalize_only:
        panels.insert(0, ("counts", cm, "{:d}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 5.4))
    axes = np.atleast_1d(axes)
    for ax, (title, mat, fmt) in zip(axes, panels):
        im = ax.imshow(mat, cmap="Blues")
        ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true", title=title)
        ax.set_xticklabels(classes, rotation=45, ha="right")
        ax.set_yticklabels(classes)
        hi = mat.max() if mat.size else 0
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                v = mat[i, j]
                ax.text(j, i, fmt.format(int(v) if fmt == "{:d}" else v), ha="center", va="center",
                        color="white" if v > hi / 2 else "black", fontsize=8)  # fmt: skip
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"{Path(str(m['model'])).parent.name or m['model']} on {m['split']}: "
                 f"accuracy {100 * m['accuracy']:.2f}% ({m['n']} faces)")  # fmt: skip
    fig.tight_layout()
    save_figure(fig, path, source=split_source(m["split"], m["data"]) if "data" in m else None)
