"""The forward pass shared by training's validation and every use of a loaded model (infer/model.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fercli.hardware import fp32_inference


def normalize(x_u8: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 faces [B,48,48] or [B,1,48,48] -> float [B,1,48,48] with the training set's mean and std."""
    x = x_u8.float() if x_u8.dim() == 4 else x_u8.float().unsqueeze(1)
    return (x / 255.0 - mean) / std


@torch.no_grad()
def predict_probs(
    model: nn.Module, images: np.ndarray | torch.Tensor, mean: float, std: float, device: torch.device,
    batch: int = 512, tta: bool = False, on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:  # fmt: skip
    """Class probabilities [N,classes] (float32, on the CPU) for uint8 faces [N,48,48]; `tta` averages
    over a horizontal flip. fp32 without TF32 on every device (hardware.fp32_inference: predictions must
    not depend on the GPU, nor on training having run in this process), inputs in channels_last like the
    models load_model gives. One CPU-GPU sync per batch (the copy back)."""
    model.eval()
    out = []
    with fp32_inference():
        for i in range(0, len(images), batch):
            # np.array copies a memory-mapped slice into writable memory, as torch expects
            xb = images[i : i + batch] if torch.is_tensor(images) else torch.from_numpy(np.array(images[i : i + batch]))
            x = normalize(xb.to(device, non_blocking=True), mean, std).contiguous(memory_format=torch.channels_last)
            p = model(x).float().softmax(1)
            if tta:
                p = (p + model(x.flip(3).contiguous(memory_format=torch.channels_last)).float().softmax(1)) / 2
            out.append(p.cpu())
            if on_batch is not None:
                on_batch(len(xb))
    return torch.cat(out) if out else torch.zeros(0, model_classes(model))


def model_classes(model: nn.Module) -> int:
    """How many classes a network predicts: the size of its last Linear layer's output."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else 0
