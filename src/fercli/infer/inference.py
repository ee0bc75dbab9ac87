"""The forward pass shared by training's validation and every use of a loaded model (infer/model.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fercli.defaults import CPU_FORWARD
from fercli.files.checkpoint import tta_mode
from fercli.hardware import fp32_inference

SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))  # (dy, dx) in pixels of the "crops" views (defaults.TTA_MODES)


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """Normalised faces [B,1,H,W] -> the views `mode` averages, each [B,1,H,W]. Shifts pad with the edge
    pixels (replicate), so no view shows a border the training augmentation did not."""
    views = [x] if mode == "none" else [x, x.flip(3)]
    if mode == "crops":
        h, w = x.shape[-2:]
        for v in list(views):
            padded = F.pad(v, (1, 1, 1, 1), mode="replicate")
            views += [padded[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in SHIFTS]
    return views


def normalize(x_u8: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 faces [B,48,48] or [B,1,48,48] -> float [B,1,48,48] with the training set's mean and std."""
    x = x_u8.float() if x_u8.dim() == 4 else x_u8.float().unsqueeze(1)
    return (x / 255.0 - mean) / std


@torch.no_grad()
def predict_probs(
    model: nn.Module, images: np.ndarray | torch.Tensor, mean: float, std: float, device: torch.device,
    batch: int = 512, tta: bool | str = False, on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:  # fmt: skip
    """Class probabilities [N,classes] (float32, on the CPU) for uint8 faces [N,48,48], averaged over the
    views of `tta` (tta_views; True or "flip": the face and its mirror). fp32 without TF32 on every device
    (hardware.fp32_inference: predictions must not depend on the GPU, nor on training having run in this
    process), inputs in channels_last like the models load_model gives. On a CPU each batch is forwarded
    CPU_FORWARD faces at a time. One CPU-GPU sync per batch (the copy back)."""
    model.eval()
    mode, out = tta_mode(tta), []
    step = CPU_FORWARD if torch.device(device).type == "cpu" else batch
    with fp32_inference():
        for i in range(0, len(images), batch):
            # np.array copies a memory-mapped slice into writable memory, as torch expects
            xb = images[i : i + batch] if torch.is_tensor(images) else torch.from_numpy(np.array(images[i : i + batch]))
            x = normalize(xb.to(device, non_blocking=True), mean, std)
            out.append(view_mean_probs(model, x, mode, step).cpu())
            if on_batch is not None:
                on_batch(len(xb))
    return torch.cat(out) if out else torch.zeros(0, model_classes(model))


def view_mean_probs(model: nn.Module, x: torch.Tensor, mode: str, step: int) -> torch.Tensor:
    """Normalised faces [B,1,H,W] -> softmax [B,classes] averaged over the views of `mode` (tta_views),
    forwarded `step` faces a pass."""
    parts = []
    for j in range(0, len(x), step):
        views = tta_views(x[j : j + step], mode)
        parts.append(sum(model(v.contiguous(memory_format=torch.channels_last)).float().softmax(1) for v in views))
    return torch.cat(parts) / len(views)


def model_classes(model: nn.Module) -> int:
    """How many classes a network predicts: the size of its last Linear layer's output."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else 0
