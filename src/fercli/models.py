"""The network registry: each network is one decorated function over the shared builders below.

Every network takes a 1-channel 48x48 face normalised by the data set's mean and std, and returns
one logit per class (`num_classes`: 7 for FER2013, 8 for FER+). `width` scales every channel count (0.25
gives a network that trains usefully on a CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fercli.classes import CLASSES, IMAGE_SIZE
from fercli.errors import USAGE, FerError

NUM_CLASSES = len(CLASSES)


@dataclass
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]
    summary: str


_REGISTRY: dict[str, ModelSpec] = {}


def register(summary: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[fn.__name__] = ModelSpec(fn.__name__, fn, summary)
        return fn

    return wrap


def names() -> list[str]:
    return list(_REGISTRY)


def spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise FerError(f"unknown network '{name}' (choose from {', '.join(_REGISTRY)})", USAGE)
    return _REGISTRY[name]


def create(name: str, num_classes: int = NUM_CLASSES, **kwargs: object) -> nn.Module:
    """Build a registered network; unknown names or arguments fail with the choices listed."""
    s = spec(name)
    try:
        return s.build(num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise FerError(f"network '{name}' does not take these arguments: {kwargs} ({e})", USAGE) from e


# ---- shared builders -------------------------------------------------------------------------------


def _ch(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


def conv_block(cin: int, cout: int, order: str) -> list[nn.Module]:
    """One 3x3 conv unit; `order` is "crb" (Conv-ReLU-BN, the study's) or "cbr" (Conv-BN-ReLU)."""
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=order == "crb")
    if order == "crb":
        return [conv, nn.ReLU(inplace=True), nn.BatchNorm2d(cout)]
    return [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def vgg_features(
    channels: list[int], convs: list[int], order: str, dropout: float = 0.0, pools: list[bool] | None = None
) -> tuple[nn.Sequential, int]:
    """Stages of `convs[i]` 3x3 units at `channels[i]`, each then MaxPool2 (unless pools[i] is False)
    and optional Dropout. Returns the stack and the spatial size it leaves of a 48x48 input."""
    layers: list[nn.Module] = []
    cin, size = 1, IMAGE_SIZE
    for i, (c, n) in enumerate(zip(channels, convs)):
        stage: list[nn.Module] = []
        for _ in range(n):
            stage += conv_block(cin, c, order)
            cin = c
        if pools is None or pools[i]:
            stage.append(nn.MaxPool2d(2))
            size //= 2
        if dropout:
            stage.append(nn.Dropout(dropout))
        layers.append(nn.Sequential(*stage))
    return nn.Sequential(*layers), size


def mlp_head(features: int, hidden: list[int], dropout: float, num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(features, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        features = h
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


class Net(nn.Module):
    """features -> head; `features` is what gradcam and `fer ascent` look into."""

    def __init__(self, features: nn.Sequential, head: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B,1,48,48] -> logits [B,classes]
        return self.head(self.features(x))


# ---- the networks ---------------------------------------------------------------------------------


@register("the study's network: 5 stages of 3x(Conv3x3-ReLU-BN), MaxPool2, Dropout 0.5; 64-128-256-512-512")
def vgg5(width: float = 1.0, num_classes: int = NUM_CLASSES) -> nn.Module:
    chans = [_ch(c, width) for c in (64, 128, 256, 512, 512)]
    features, size = vgg_features(chans, [3] * 5, "crb", dropout=0.5)  # 48 -> 1
    return Net(features, mlp_head(chans[-1] * size * size, [], 0.0, num_classes))


@register("VGG with configurable convs per stage (default 2,2,2,2), Conv-BN-ReLU, two FC 1024 + dropout")
def vgg(width: float = 1.0, convs: tuple[int, ...] = (2, 2, 2, 2), fc: int = 1024, dropout: float = 0.5,
        num_classes: int = NUM_CLASSES) -> nn.Module:  # fmt: skip
    base = (64, 128, 256, 512, 512, 512)
    if not 1 <= len(convs) <= len(base):
        raise FerError(f"vgg takes 1..{len(base)} stages, got {len(convs)}", USAGE)
    chans = [_ch(c, width) for c in base[: len(convs)]]
    features, size = vgg_features(chans, list(convs), "cbr")
    return Net(features, mlp_head(chans[-1] * size * size, [_ch(fc, width)] * 2, dropout, num_classes))


@register("the default: vgg with 4 stages 64-128-256-512 of 2 convs each, FC 1024-1024")
def vgg4(width: float = 1.0, dropout: float = 0.5, num_classes: int = NUM_CLASSES) -> nn.Module:
    return vgg(width=width, dropout=dropout, num_classes=num_classes)


@register("vgg4 at a quarter of the width (16-32-64-128, FC 256): trains usefully on a laptop CPU")
def vgg4s(width: float = 0.25, dropout: float = 0.5, num_classes: int = NUM_CLASSES) -> nn.Module:
    return vgg(width=width, dropout=dropout, num_classes=num_classes)


@register("for CPUs: one conv at 48x48 (16 ch), then 2 convs per stage at 24-12-6 px (48-128-256), FC 256-256")
def vgg4c(width: float = 1.0, dropout: float = 0.5, num_classes: int = NUM_CLASSES) -> nn.Module:
    # Channel counts are multiples of 16: one AVX-512 register of fp32 (vgg4 at width 0.375, 24-48-96-192,
    # trains 2.5x slower than at 0.25 on this project's CPU, not the 2.1x its FLOPs predict).
    chans = [_ch(c, width) for c in (16, 48, 128, 256)]
    features, size = vgg_features(chans, [1, 2, 2, 2], "cbr")
    return Net(features, mlp_head(chans[-1] * size * size, [_ch(256, width)] * 2, dropout, num_classes))


@register("AlexNet-style stack for 48x48: five 3x3 convs (64-128-256-256-128), three max-pools, FC 1024-1024")
def alexnet(width: float = 1.0, dropout: float = 0.5, num_classes: int = NUM_CLASSES) -> nn.Module:
    chans = [_ch(c, width) for c in (64, 128, 256, 256, 128)]
    features, size = vgg_features(chans, [1] * 5, "cbr", pools=[True, True, False, False, True])
    return Net(features, mlp_head(chans[-1] * size * size, [_ch(1024, width)] * 2, dropout, num_classes))


@register("ResNet-18 adapted to 48x48 grayscale: 3x3 stem at stride 1, no stem max-pool")
def resnet18(width: float = 1.0, num_classes: int = NUM_CLASSES) -> nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    net = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, width_per_group=64)
    if width != 1.0:
        raise FerError("resnet18 supports width 1.0 only", USAGE)
    net.conv1 = nn.Conv2d(1, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    features = nn.Sequential(net.conv1, net.bn1, net.relu, net.layer1, net.layer2, net.layer3, net.layer4)
    head = nn.Sequential(net.avgpool, nn.Flatten(), net.fc)
    return Net(features, head)


# ---- inspection -----------------------------------------------------------------------------------


def count_flops(model: nn.Module) -> int:
    """Multiply-adds x2 of one 48x48 forward pass (convolutions and linear layers)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += 2 * out.numel() * k

    def linear_hook(m: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total


def describe(width: float | None = None) -> list[dict[str, object]]:
    """One row per registered network: name, parameters, GFLOPs per 48x48 image, summary; with `width`, each
    network at that channel multiplier (those that take no other width are left out)."""
    rows = []
    for name, s in _REGISTRY.items():
        try:
            model = s.build() if width is None else s.build(width=width)
        except FerError:
            continue
        rows.append(
            {
                "name": name,
                "params": sum(p.numel() for p in model.parameters()),
                "gflops": count_flops(model) / 1e9,
                "summary": s.summary,
            }
        )
    return rows
