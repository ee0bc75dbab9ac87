"""Augmentation on the device, whole batches at a time: no per-image Python in the training loop.

Per sample: a random affine (rotation, zoom, shift, horizontal flip) folded into one 2x3 matrix and
applied with a single grid_sample, then random erasing as a broadcast rectangle mask. Every random
number comes from the caller's generator, so a run is reproducible and resumable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fercli.engine.recipe import Recipe


def alternating(first: torch.Tensor, epoch: int) -> torch.Tensor:
    """`alternate_flip`: the faces flipped in epoch 1 (bool [N]) are flipped in every odd epoch, the
    others in every even one, so each face is seen both ways in every two epochs."""
    return first if epoch % 2 else ~first


def augment(x: torch.Tensor, r: Recipe, g: torch.Generator, rank: int = 0, world: int = 1,
            flips: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """x: normalised faces [B,1,H,W] float -> augmented copy, same shape. Padding is 0 (the mean).
    `flips` (bool [B]) decides the horizontal flips instead of chance (`alternate_flip`); the random
    numbers drawn stay the same either way.

    Under torchrun, x is this rank's slice of a global batch of B*world: every rank draws the random
    numbers of the whole global batch (a few per face) and keeps its own slice, so the generator stays
    in step on all ranks and a face gets the transform it would get in a single-process run.
    """
    b, dev = x.shape[0], x.device
    keep = slice(rank * b, (rank + 1) * b)

    def rand(n: int) -> torch.Tensor:
        return torch.rand(n * world, generator=g, device=dev)[keep]

    def uniform(n: int, lo: float, hi: float) -> torch.Tensor:
        return rand(n) * (hi - lo) + lo

    if r.rotate or r.scale or r.translate or r.flip:
        angle = uniform(b, -r.rotate, r.rotate) * (math.pi / 180)
        zoom = uniform(b, 1 - r.scale, 1 + r.scale)
        pairs = torch.rand(b * world, 2, generator=g, device=dev)[keep]
        shift = (pairs * (2 * r.translate) - r.translate) * 2  # [b,2]; grid units span 2
        drawn = rand(b) < r.flip
        flip = torch.where(drawn if flips is None else flips, -1.0, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # theta maps output coordinates to input coordinates: [B,2,3]
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if r.erase:
        h, w = x.shape[-2:]
        area = uniform(b, r.erase_min, r.erase_max) * (h * w)
        aspect = torch.exp(uniform(b, math.log(0.3), math.log(1 / 0.3)))
        eh = torch.sqrt(area * aspect).clamp(1, h)
        ew = torch.sqrt(area / aspect).clamp(1, w)
        y0 = rand(b) * (h - eh)
        x0 = rand(b) * (w - ew)
        on = rand(b) < r.erase
        yy = torch.arange(h, device=dev).view(1, h, 1)
        xx = torch.arange(w, device=dev).view(1, 1, w)
        box = (
            (yy >= y0.view(b, 1, 1)) & (yy < (y0 + eh).view(b, 1, 1))
            & (xx >= x0.view(b, 1, 1)) & (xx < (x0 + ew).view(b, 1, 1))
            & on.view(b, 1, 1)
        )  # fmt: skip
        x = x.masked_fill(box.unsqueeze(1), 0.0)
    return x
