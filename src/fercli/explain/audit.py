"""`fer audit`: the faces most likely mislabelled, per class: highest loss under their given label.

The given label is the one the model learned: FER2013's for a FER2013 model, the FER+ crowd majority for
a FER+ one. When the data has FER+ votes, each suspect also carries the crowd's plurality class (the most
voted of the 10 columns, unknown and NF included) and its share of the votes: whether the crowd agrees
that the face is mislabelled (bench/audit.py measures how often)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from fercli.classes import CLASSES

if TYPE_CHECKING:
    from fercli.infer.model import FerModel


def suspicion(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float [N]: -log p(given label), how strongly the model disagrees with each face's label."""
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))


def find_suspects(probs: np.ndarray, labels: np.ndarray, top: int) -> list[dict[str, Any]]:
    """For each class, the `top` faces with the largest -log p(given label). probs [N,classes], labels [N].
    Returned rows index into the arrays given."""
    loss = suspicion(probs, labels)
    pred = probs.argmax(1)
    rows = []
    for c in range(probs.shape[1]):
        idx = np.flatnonzero(labels == c)
        for i in idx[np.argsort(-loss[idx], kind="stable")][:top]:
            rows.append({"i": int(i), "given": c, "predicted": int(pred[i]),
                         "confidence": float(probs[i, pred[i]]), "loss": float(loss[i])})  # fmt: skip
    return rows


def audit_split(model: FerModel, data: Any, split: str, top: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Suspects of one split of a PreparedData: (the split's labeled indices into the file, suspect rows,
    whose "i" indexes those indices)."""
    from fercli.data.crowd import scored_faces
    from fercli.errors import USAGE, FerError

    idx, given = scored_faces(model.classes, data, split)
    if not len(idx):
        raise FerError(f"the {split} split has no labeled faces", USAGE)
    from fercli.progress import StepBar

    with StepBar(len(idx), f"audit {split}") as bar:
        probs = model.probs(data.images[idx], on_batch=bar.advance).numpy()
    return idx, find_suspects(probs, given, top)


def crowd_view(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int [N] the plurality vote column, float [N] its share of the votes) of uint8 votes [N,10]."""
    from fercli.data.crowd import crowd_share

    top = np.asarray(votes).argmax(1)
    return top, crowd_share(votes, top)


def audit_figure(images: np.ndarray, rows: list[dict[str, Any]], top: int, path: str | os.PathLike,
                 classes: tuple[str, ...] = CLASSES, source: str | None = None) -> None:  # fmt: skip
    """Rows are the given classes, columns the suspects, each titled given -> predicted (confidence)."""
    from fercli.plots import pyplot, save_figure

    plt = pyplot()
    given = sorted({r["given"] for r in rows})
    fig, axes = plt.subplots(len(given), top, figsize=(1.6 * top, 1.9 * len(given) + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ri, c in enumerate(given):
        for j, r in enumerate([r for r in rows if r["given"] == c]):
            ax = axes[ri, j]
            ax.imshow(images[r["i"]], cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{classes[c]} -> {classes[r['predicted']]}\n{100 * r['confidence']:.0f}%", fontsize=7)
    # Ranked by loss under the given label: a class with few disagreements shows agreeing faces too.
    fig.suptitle("highest loss under the given label: given -> predicted (confidence)"
                 + (f"\n{source}" if source else ""), fontsize=10)  # fmt: skip
    fig.tight_layout()
    save_figure(fig, path, source=source)
