"""What the network looks at: saliency maps (grad, smoothgrad, integrated gradients, Grad-CAM) and the
`fer saliency` figures. 1-channel 48x48 faces natively; every map is [48,48].

All methods take normalised faces x [B,1,48,48] and target classes [B] and return maps [B,48,48]:
- grad: |d score_c / d x|, the study's method as its text describes it;
- smoothgrad: |gradient| averaged over noisy copies of x (noise 15% of the face's value range);
- ig: integrated gradients from a black face, (x - x0) * mean gradient along the straight path
  (trapezoid rule); the attributions sum to score(x) - score(x0) (completeness);
- gradcam: ReLU of gradient x activation summed over channels at the last ReLU of 12x12 px or more,
  upsampled (Grad-CAM in its HiResCAM form: see gradcam_map).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fercli.classes import CLASSES, IMAGE_SIZE
from fercli.data.prepared import PreparedData
from fercli.errors import USAGE, FerError
from fercli.hardware import fp32_inference

if TYPE_CHECKING:
    from fercli.infer.model import FerModel

METHODS = ("grad", "smoothgrad", "ig", "gradcam")


def _score_grad(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    scores = model(x).gather(1, target[:, None]).squeeze(1)  # [B]: logit of each face's target class
    (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad, scores.detach()


def grad_map(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _score_grad(model, x, target)[0].abs()[:, 0]


def smoothgrad_map(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, samples: int = 25, noise: float = 0.15, seed: int = 0
) -> torch.Tensor:
    g = torch.Generator(device=x.device).manual_seed(seed)
    span = (x.amax((1, 2, 3)) - x.amin((1, 2, 3))).view(-1, 1, 1, 1)
    total = torch.zeros_like(x)
    for _ in range(samples):
        eps = torch.randn(x.shape, generator=g, device=x.device) * noise * span
        total += _score_grad(model, x + eps, target)[0].abs()
    return (total / samples)[:, 0]


def ig_map(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor, steps: int = 64
) -> torch.Tensor:
    """Signed integrated-gradients attributions [B,48,48]."""
    alphas = torch.linspace(0, 1, steps + 1, device=x.device, dtype=x.dtype)
    weights = torch.full_like(alphas, 1.0 / steps)
    weights[0] = weights[-1] = 0.5 / steps  # trapezoid rule
    total = torch.zeros_like(x)
    for a, w in zip(alphas, weights):
        total += w * _score_grad(model, baseline + a * (x - baseline), target)[0]
    return ((x - baseline) * total)[:, 0]


# Grad-CAM's layer: the last activation at this size or more. Deeper maps are too coarse to place a
# feature on a 48x48 face: on the demo's vgg4s, the 6x6 layer put 15% of the map's mass on the brows,
# eyes and mouth (chance: 12%) and its peak there on 15% of faces; the 12x12 layer 34% and 86%.
GRADCAM_MIN_SIZE = 12


def _cam_activation(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B,K], the activation Grad-CAM weighs [B,C,h,w]): the output of the last ReLU (the
    network's non-negative features) that is still GRADCAM_MIN_SIZE px or more."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise FerError("gradcam needs a network with ReLU activations", USAGE)
    seen: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        if out.dim() == 4 and min(out.shape[2:]) >= GRADCAM_MIN_SIZE:
            seen.append(out)

    hooks = [m.register_forward_hook(keep) for m in relus]
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise FerError(f"gradcam needs a ReLU output of {GRADCAM_MIN_SIZE}x{GRADCAM_MIN_SIZE} px or more", USAGE)
    return logits, seen[-1]


def gradcam_map(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ReLU(sum over channels of gradient * activation), upsampled to 48x48. The gradient weighs each
    position (HiResCAM, Draelos & Carin 2020) rather than each channel's mean: the same map as Grad-CAM
    for a head that averages over positions, and the faithful one for this project's flatten-then-FC
    heads, where channel means cancel (classic Grad-CAM left a third of the demo's maps blank)."""
    logits, act = _cam_activation(model, x)
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), act)
    cam = F.relu((grad * act).sum(1, keepdim=True))  # [B,1,h,w]
    return F.interpolate(cam, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)[:, 0].detach()


def saliency(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, baseline: torch.Tensor | None = None
) -> torch.Tensor:
    """Maps [B,48,48] of one method; `baseline` (normalised black face) is needed by ig."""
    if method == "grad":
        return grad_map(model, x, target)
    if method == "smoothgrad":
        return smoothgrad_map(model, x, target)
    if method == "ig":
        return ig_map(model, x, target, baseline if baseline is not None else torch.zeros_like(x))
    if method == "gradcam":
        return gradcam_map(model, x, target)
    raise _unknown_method(method)


def _unknown_method(method: str) -> FerError:
    return FerError(f"unknown --method '{method}' (choose from {', '.join(METHODS)}, all)", USAGE)


def methods_for(method: str) -> list[str]:
    """A --method value as the list of methods to run: one name, or all of them."""
    if method == "all":
        return list(METHODS)
    if method not in METHODS:
        raise _unknown_method(method)
    return [method]


def face_labels(classes: tuple[str, ...], data: PreparedData, idx: np.ndarray) -> np.ndarray:
    """The labels of faces `idx` in a model's class set (the FER+ majority for FER+ models); -1 where a
    face has none, or all -1 when the data cannot say (a FER+ model on data without votes)."""
    from fercli.data import crowd

    if classes == crowd.FERPLUS_CLASSES and data.votes is None:
        return np.full(len(idx), -1, dtype=np.int64)
    return crowd.truth(classes, data, idx)


def pick_faces(data: PreparedData, split: str, index: list[int] | None, per_class: int,
               classes: tuple[str, ...] = CLASSES) -> tuple[np.ndarray, list[str]]:  # fmt: skip
    """The faces to explain as indices into the file, and their captions: `per_class` labeled faces of
    each class, or else the given positions within the split."""
    if per_class:
        pool = data.indices(split)
        labels = face_labels(classes, data, pool)
        return np.concatenate([pool[labels == c][:per_class] for c in range(len(classes))]), []
    if not index:
        raise FerError("give --index I (repeatable) or --per-class K", USAGE)
    pool = data.indices(split)
    bad = [i for i in index if not 0 <= i < len(pool)]
    if bad:
        raise FerError(f"--index {bad[0]}: the {split} split has faces 0..{len(pool) - 1}", USAGE)
    return pool[index], [f"{split} #{i}" for i in index]


def parse_target(target: str, classes: tuple[str, ...] = CLASSES) -> str | int:
    """pred, label, one of the model's class names or a code 0..k-1."""
    t = target.lower()
    if t in ("pred", "label"):
        return t
    if t in classes:
        return classes.index(t)
    if t.isdigit() and int(t) < len(classes):
        return int(t)
    raise FerError(f"--target must be pred, label, a class name ({', '.join(classes)}) or 0..{len(classes) - 1}, "
                   f"got '{target}'", USAGE)  # fmt: skip


@fp32_inference()  # the maps, like predictions, must not depend on the GPU's TF32 setting
def explain(
    loaded: FerModel, images: np.ndarray, labels: np.ndarray, methods: list[str], target: str = "pred",
) -> dict[str, Any]:  # fmt: skip
    """Maps for faces uint8 [B,48,48]: {"maps": [B,M,48,48], "pred", "prob", "target", ...} as numpy;
    `labels` are in the model's class set (face_labels)."""
    classes, dev, model = loaded.classes, loaded.device, loaded.net.eval()
    x = loaded.inputs(images)
    with torch.no_grad():
        probs = model(x).float().softmax(1)
    pred = probs.argmax(1)
    t = parse_target(target, classes)
    if t == "pred":
        tgt = pred
    elif t == "label":
        if (labels < 0).any():
            raise FerError("--target label needs labeled faces; these have none", USAGE)
        tgt = torch.from_numpy(np.asarray(labels)).to(dev)
    else:
        tgt = torch.full_like(pred, int(t))
    baseline = loaded.inputs(np.zeros_like(images))
    maps = torch.stack([saliency(model, x, tgt, m, baseline) for m in methods], 1)  # [B,M,48,48]
    return {
        "maps": maps.cpu().numpy(), "methods": methods, "pred": pred.cpu().numpy(),
        "prob": probs.gather(1, pred[:, None])[:, 0].cpu().numpy(), "target": tgt.cpu().numpy(),
        "classes": classes,
    }  # fmt: skip


def saliency_figure(
    images: np.ndarray, labels: np.ndarray, result: dict[str, Any], titles: list[str], path: str | os.PathLike,
    source: str | None = None,
) -> None:
    """One row per face: the face, each method's map (with a colour bar), and an overlay of the first map;
    `source` (plots.split_source) titles the figure and goes into the PNG's metadata."""
    from fercli.plots import pyplot, save_figure

    plt = pyplot()
    maps, methods, classes = result["maps"], result["methods"], result["classes"]
    cols = 1 + len(methods) + 1
    fig, axes = plt.subplots(len(images), cols, figsize=(2.6 * cols, 2.7 * len(images)), squeeze=False)
    for r, img in enumerate(images):
        given = classes[labels[r]] if labels[r] >= 0 else "unlabeled"
        pred = classes[result["pred"][r]]
        axes[r, 0].imshow(img, cmap="gray", vmin=0, vmax=255)
        axes[r, 0].set_title(f"{titles[r]}\ntrue {given}\npred {pred} ({100 * result['prob'][r]:.0f}%)", fontsize=8)
        for m, method in enumerate(methods):
            ax = axes[r, 1 + m]
            signed = method == "ig"
            mp = maps[r, m]
            lim = float(np.abs(mp).max()) or 1.0
            im = ax.imshow(mp, cmap="RdBu_r" if signed else "inferno", vmin=-lim if signed else 0, vmax=lim)
            ax.set_title(f"{method} (target {classes[result['target'][r]]})", fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        over = np.abs(maps[r, 0])
        axes[r, -1].imshow(img, cmap="gray", vmin=0, vmax=255)
        axes[r, -1].imshow(over / (over.max() or 1.0), cmap="inferno", alpha=0.55)
        axes[r, -1].set_title(f"overlay ({methods[0]})", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    if source:
        fig.suptitle(f"faces from {source}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, source=source)


def per_class_figure(
    images: np.ndarray, labels: np.ndarray, result: dict[str, Any], path: str | os.PathLike, k: int,
    source: str | None = None,
) -> None:
    """A grid of k faces per emotion: each face, then its map as an overlay, side by side."""
    from fercli.plots import pyplot, save_figure

    plt = pyplot()
    names = result["classes"]
    shown = sorted(set(int(c) for c in labels))
    fig, axes = plt.subplots(len(shown), 2 * k, figsize=(1.6 * 2 * k, 1.9 * len(shown)), squeeze=False)
    for r, c in enumerate(shown):
        idx = np.flatnonzero(labels == c)[:k]
        for j in range(k):
            a, b = axes[r, 2 * j], axes[r, 2 * j + 1]
            for ax in (a, b):
                ax.set_xticks([])
                ax.set_yticks([])
            if j >= len(idx):
                a.axis("off")
                b.axis("off")
                continue
            i = idx[j]
            a.imshow(images[i], cmap="gray", vmin=0, vmax=255)
            mp = np.abs(result["maps"][i, 0])
            b.imshow(images[i], cmap="gray", vmin=0, vmax=255)
            b.imshow(mp / (mp.max() or 1.0), cmap="inferno", alpha=0.6)
            b.set_title(f"pred {names[result['pred'][i]]}", fontsize=7)
        axes[r, 0].set_ylabel(names[c], fontsize=10)
    fig.suptitle(f"{result['methods'][0]} saliency, {k} faces per emotion" + (f", from {source}" if source else ""))
    fig.tight_layout()
    save_figure(fig, path, source=source)
