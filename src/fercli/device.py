"""Which torch device a command runs on: CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

from fercli import console
from fercli.errors import USAGE, FerError


def pick_device(name: str = "auto", announce: bool = True) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            dev = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            dev = torch.device("mps")
        else:
            dev = torch.device("cpu")
    else:
        try:
            dev = torch.device(name)
        except RuntimeError as e:
            raise FerError(f"--device '{name}' is not a device (auto, cpu, cuda, cuda:N, mps)", USAGE) from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise FerError("--device cuda asked for, but no CUDA GPU is available", USAGE)
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FerError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)", USAGE)
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise FerError("--device mps asked for, but MPS is not available", USAGE)
        if dev.type not in ("cpu", "cuda", "mps"):
            raise FerError(f"--device '{name}' is not supported (auto, cpu, cuda, cuda:N, mps)", USAGE)
    if announce:
        label = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
        console.info(f"device: {dev} ({label})")
    return dev
