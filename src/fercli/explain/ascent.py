"""`fer ascent`: gradient ascent images, all requested filters at once as one batch.

From small random noise, maximise the mean activation of filter f of a conv layer (image f of the
batch works on filter f), or a class score with `--class-vis`. Readability comes from three
regularisers: a random jitter (roll) each step, a light blur every `blur_every` steps, and a
total-variation penalty. Pixels stay in the valid range [0,255] (in normalised units), and the step
size decays linearly to 10%.

`ascend` returns the optimised images themselves; the contrast stretch that makes faint patterns
visible is a display step (`stretch`), applied only to the figure: a stretched image is not the one
that maximises the unit, and can excite it less than plain noise does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fercli.classes import IMAGE_SIZE
from fercli.defaults import ASCENT_BLUR_EVERY, ASCENT_JITTER, ASCENT_LR, ASCENT_STEPS, ASCENT_TV
from fercli.errors import USAGE, FerError
from fercli.hardware import fp32_inference

if TYPE_CHECKING:
    from fercli.infer.model import FerModel


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def pick_layer(model: nn.Module, layer: str) -> tuple[str, nn.Conv2d]:
    """A conv layer by name (see --layer list) or by position (0 first, -1 last)."""
    layers = conv_layers(model)
    names = list(layers)
    if layer in layers:
        return layer, layers[layer]
    try:
        k = int(layer)
        return names[k], layers[names[k]]
    except (ValueError, IndexError):
        pass
    raise FerError(f"unknown layer '{layer}' (choose from {', '.join(names)}, or a position like -1)", USAGE)


def parse_filters(spec: str, limit: int) -> list[int]:
    """'0:16', '3', '1,5,9' -> filter indices below `limit`."""
    try:
        if ":" in spec:
            a, b = spec.split(":", 1)
            out = list(range(int(a or 0), int(b) if b else limit))
        else:
            out = [int(v) for v in spec.split(",")]
    except ValueError as e:
        raise FerError(f"--filters must look like 0:16 or 1,5,9, got '{spec}'", USAGE) from e
    bad = [f for f in out if not 0 <= f < limit]
    if bad or not out:
        raise FerError(f"--filters {spec}: this layer has filters 0..{limit - 1}", USAGE)
    return out


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device)
    k = (k[:, None] * k[None, :]) / 16
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3))


@fp32_inference()
def ascend(
    loaded: FerModel, layer: str | None, filters: list[int], steps: int = ASCENT_STEPS, lr: float = ASCENT_LR,
    jitter: int = ASCENT_JITTER, tv: float = ASCENT_TV, blur_every: int = ASCENT_BLUR_EVERY, class_vis: bool = False,
    seed: int = 0, on_step: Callable[[int], None] | None = None,
) -> np.ndarray:  # fmt: skip
    """Images [F,48,48] in [0,1] (float32), one per filter (or class), each the iterate that excited its
    own unit most (the starting noise counts: with steps=0 it is returned)."""
    dev, model = loaded.device, loaded.net.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    mean, std = loaded.mean_std
    lo, hi = (0 - mean) / std, (1 - mean) / std
    g = torch.Generator(device=dev).manual_seed(seed)
    n = len(filters)
    x = (torch.randn(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g, device=dev) * 0.1).clamp(lo, hi)
    idx = torch.tensor(filters, device=dev)
    store: dict[str, torch.Tensor] = {}
    hook = None
    if not class_vis:
        _, conv = pick_layer(model, layer or "-1")
        hook = conv.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    rows = torch.arange(n, device=dev)

    def unit(out: torch.Tensor) -> torch.Tensor:  # [F]: each image's own filter's mean activation, or class score
        return out.gather(1, idx[:, None]).squeeze(1) if class_vis else store["a"][rows, idx].mean((1, 2))

    def plain_score(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return unit(model(images))

    try:
        # The image returned is, per unit, the iterate that excites it most as it is (no jitter, no
        # penalty): the regularisers steer the search, and can pull the last iterate below an earlier one.
        best, best_score = x.clone(), plain_score(x)
        for step in range(steps):
            dx, dy = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=g, device=dev))
            xj = torch.roll(x, (dy, dx), (2, 3)).detach().requires_grad_(True)
            objective = unit(model(xj))  # [F]
            tv_pen = (xj[..., 1:, :] - xj[..., :-1, :]).abs().mean((1, 2, 3)) + (
                xj[..., :, 1:] - xj[..., :, :-1]
            ).abs().mean((1, 2, 3))
            (grad,) = torch.autograd.grad((objective - tv * tv_pen).sum(), xj)
            grad = torch.roll(grad, (-dy, -dx), (2, 3))
            grad = grad / (grad.std((1, 2, 3), keepdim=True) + 1e-8)  # per-image normalised step
            step_size = lr * (1 - 0.9 * step / max(1, steps - 1))
            with torch.no_grad():
                x = (x + step_size * grad).clamp(lo, hi)
                if blur_every and step % blur_every == 0 and step < steps - 1:
                    x = _blur(x)
            score = plain_score(x)
            better = score > best_score
            best[better], best_score = x[better], torch.maximum(best_score, score)
            if on_step is not None:
                on_step(1)
        x = best
    finally:
        if hook is not None:
            hook.remove()
        for p in model.parameters():
            p.requires_grad_(True)
    return (x.detach()[:, 0] * std + mean).clamp(0, 1).cpu().numpy()


def stretch(images: np.ndarray) -> np.ndarray:
    """Images in [0,1] [F,48,48] -> uint8, each stretched to the full range (for display only)."""
    lo = images.min((1, 2), keepdims=True)
    hi = images.max((1, 2), keepdims=True)
    return ((images - lo) / (hi - lo + 1e-8) * 255 + 0.5).astype(np.uint8)


def ascent_figure(images: np.ndarray, labels: list[str], title: str, path: str | os.PathLike) -> None:
    from fercli.plots import pyplot, save_figure

    plt = pyplot()
    n = len(images)
    cols = min(8, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.9 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (img, lab) in enumerate(zip(stretch(images), labels)):
        ax = axes.flat[i]
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.set_title(lab, fontsize=8)
    fig.suptitle(title + " (each image contrast-stretched)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def class_labels(filters: list[int], classes: tuple[str, ...]) -> list[str]:
    return [classes[f] for f in filters]
