"""Starting weights beyond the layers' own defaults, as the recipe asks (airbench's CIFAR-10 tricks):
`dirac` makes every 3x3 convolution start as the identity on its input channels, `whiten` makes the
first one a fixed whitening of the training faces' 3x3 patches. Applied to a new run only: a resumed
run's checkpoint brings its own weights (and `whiten`'s weights stay frozen either way).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fercli.errors import USAGE, FerError
from fercli.infer.inference import normalize

WHITEN_FACES = 4096  # faces whose patches estimate the 9x9 covariance (every 3x3 patch of each: ~8.7 M)
WHITEN_EPS = 5e-4  # added to each eigenvalue before 1/sqrt: keeps the flattest directions from blowing up


def convs3x3(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1]


@torch.no_grad()
def dirac(model: nn.Module) -> None:
    """The first min(in, out) filters of each 3x3 convolution pass their input channel through; the
    rest keep their random initialisation. A deep stack then starts close to a shallow one."""
    for conv in convs3x3(model):
        k = min(conv.in_channels, conv.out_channels)
        nn.init.dirac_(conv.weight[:k])


def patch_whitening(faces: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Filters [out,1,3,3]: the top out/2 eigenvectors of the 3x3 patch covariance of `faces` (float
    [N,1,H,W], normalised), each scaled by 1/sqrt(its eigenvalue), and their negatives (so a ReLU after
    them keeps both signs)."""
    patches = F.unfold(faces, 3).transpose(1, 2).reshape(-1, 9).double()  # [N*(H-2)*(W-2), 9]
    cov = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    top = out_channels // 2
    vals, vecs = eigenvalues.flip(0)[:top], eigenvectors.T.flip(0)[:top]  # [top], [top,9]: largest first
    scaled = (vecs / torch.sqrt(vals + WHITEN_EPS)[:, None]).float().reshape(top, 1, 3, 3)
    return torch.cat([scaled, -scaled])


def first_conv(model: nn.Module) -> nn.Conv2d:
    convs = convs3x3(model)
    conv = convs[0] if convs else None
    if conv is None or conv.in_channels != 1 or conv.out_channels % 2 or conv.out_channels > 18:
        raise FerError("whiten needs a network whose first layer is a 3x3 convolution of the gray face into an "
                       "even number of channels up to 18 (vgg4s, vgg4c)", USAGE)  # fmt: skip
    return conv


@torch.no_grad()
def whiten(model: nn.Module, train_u8: np.ndarray, mean: float, std: float) -> None:
    """The first convolution becomes the whitening of the train faces' patches (a sample of
    WHITEN_FACES, evenly spaced over the split)."""
    conv = first_conv(model)
    pick = np.linspace(0, len(train_u8) - 1, min(WHITEN_FACES, len(train_u8))).astype(np.int64)
    faces = normalize(torch.from_numpy(train_u8[pick]), mean, std)
    conv.weight.copy_(patch_whitening(faces, conv.out_channels).to(conv.weight))


def freeze_whitening(model: nn.Module) -> None:
    """`whiten`'s filters are fixed: they take no gradient and are in no optimizer group."""
    first_conv(model).weight.requires_grad_(False)
