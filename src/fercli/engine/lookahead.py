"""Lookahead, airbench's CIFAR-10 trick (reference, outside the project: with BatchNorm momentum 0.6 it
took airbench94 from 13.5 to 12 A100 epochs to 94%): a slow copy of the weights that the trained ones
are pulled back to every EVERY steps. The pull grows with the run, decay = PEAK * (step / total)^3, from
none at the start to PEAK at the end, and the last planned step takes the slow weights outright (a `--time`
run that re-plans its end onto the epoch just validated keeps the weights it validated, at most EVERY - 1
steps from a pull). BatchNorm's running statistics are averaged with the weights, hence airbench's
faster-tracking BatchNorm momentum.
"""

from __future__ import annotations

import torch
from torch import nn

EVERY = 5  # optimizer steps between pulls
PEAK = 0.95**EVERY  # the last pull's weight on the slow copy (airbench's 0.95 per step, over 5 steps)
PREFIX = "lookahead."  # the slow copy's tensors in a last.safetensors's resume state


def decay_at(step: int, total: int) -> float:
    """The slow copy's weight in the pull after optimizer step `step` (1-based) of `total`."""
    return PEAK * min(1.0, step / total) ** 3


class Lookahead:
    """The slow copy of a model's floating-point state (parameters and BatchNorm running statistics)."""

    def __init__(self, model: nn.Module) -> None:
        # state_dict's tensors share the model's storage: copying into them moves the model.
        state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
        self._names, self._fast = list(state), list(state.values())
        self._slow = [v.clone() for v in self._fast]

    @torch.no_grad()
    def after_step(self, step: int, total: int) -> None:
        """After optimizer step `step` (1-based) of `total`: pull every EVERY-th, and at the last."""
        if step < total and step % EVERY:
            return
        decay = 1.0 if step >= total else decay_at(step, total)
        torch._foreach_lerp_(self._slow, self._fast, 1 - decay)  # two fused kernels, not one per tensor
        torch._foreach_copy_(self._fast, self._slow)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The slow copy, named for a checkpoint's resume state."""
        return {PREFIX + k: v for k, v in zip(self._names, self._slow, strict=True)}

    @torch.no_grad()
    def load(self, extra: dict[str, torch.Tensor]) -> None:
        """The slow copy from a checkpoint's resume state; KeyError or RuntimeError when it does not fit."""
        for name, slow in zip(self._names, self._slow, strict=True):
            saved = extra[PREFIX + name]
            if saved.shape != slow.shape:  # copy_ would broadcast it; load_state_dict refuses, and so do we
                raise RuntimeError(f"{PREFIX}{name} has shape {tuple(saved.shape)}, not {tuple(slow.shape)}")
            slow.copy_(saved)


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """PyTorch's convention: the newest batch's weight in each BatchNorm running statistic (its default 0.1;
    airbench's 0.6 is 1 - 0.6 = 0.4 here)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
