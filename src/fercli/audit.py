"""`fer audit`: the faces most likely mislabelled, per class: highest loss under their given label."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from fercli.checkpoint import model_tta
from fercli.classes import CLASSES


def find_suspects(probs: np.ndarray, labels: np.ndarray, top: int) -> list[dict[str, Any]]:
    """For each class, the `top` faces with the largest -log p(given label). probs [N,7], labels [N].
    Returned rows index into the arrays given."""
    loss = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))
    pred = probs.argmax(1)
    rows = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(labels == c)
        for i in idx[np.argsort(-loss[idx], kind="stable")][:top]:
            rows.append({"i": int(i), "given": c, "predicted": int(pred[i]),
                         "confidence": float(probs[i, pred[i]]), "loss": float(loss[i])})  # fmt: skip
    return rows


def audit_split(
    model: Any, meta: dict[str, Any], data: Any, split: str, top: int, device: Any, tta: bool | None = None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Suspects of one split of a PreparedData: (the split's labeled indices into the file, suspect rows,
    whose "i" indexes those indices)."""
    from fercli.errors import USAGE, FerError
    from fercli.inference import predict_probs

    idx = data.indices(split, labeled_only=True)
    if not len(idx):
        raise FerError(f"the {split} split has no labeled faces", USAGE)
    from fercli.progress import StepBar

    norm = meta["normalize"]
    with StepBar(len(idx), f"audit {split}") as bar:
        probs = predict_probs(model, data.images[idx], norm["mean"], norm["std"], device, tta=model_tta(meta, tta),
                              on_batch=bar.advance).numpy()  # fmt: skip
    return idx, find_suspects(probs, data.labels[idx], top)


def audit_figure(images: np.ndarray, rows: list[dict[str, Any]], top: int, path: str | os.PathLike) -> None:
    """Rows are the given classes, columns the suspects, each titled given -> predicted (confidence)."""
    from fercli.plots import _plt, save_figure

    plt = _plt()
    classes = sorted({r["given"] for r in rows})
    fig, axes = plt.subplots(len(classes), top, figsize=(1.6 * top, 1.9 * len(classes) + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ri, c in enumerate(classes):
        for j, r in enumerate([r for r in rows if r["given"] == c]):
            ax = axes[ri, j]
            ax.imshow(images[r["i"]], cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{CLASSES[c]} -> {CLASSES[r['predicted']]}\n{100 * r['confidence']:.0f}%", fontsize=7)
    fig.suptitle("most likely mislabelled: given -> predicted (confidence)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
