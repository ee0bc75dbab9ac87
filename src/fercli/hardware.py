"""The machine: which torch device a command runs on (CUDA, then Apple's MPS, then the CPU), what the CPU
is, and the numerics each phase runs with there. A low layer: training (engine/) and inference (infer/)
both use it.

Training on CUDA: cuDNN autotuning, and TF32 tensor cores for fp32 matmuls and convolutions.
Inference on every device: plain fp32 (`fp32_inference`), so a prediction and its `--probs` do not
depend on the GPU beyond float rounding, nor on whether training ran earlier in the same process
(`fer demo`, the benches). On torch 2.9 and later the TF32 switches are the `fp32_precision` settings
("ieee" or "tf32"); before, the `allow_tf32` flags. The two are never mixed: torch warns when they are.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from collections.abc import Iterator

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
        label = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
        if dev.type == "cpu":
            label += f", {torch.get_num_threads()} threads"
            if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
                label += ", idle threads sleep"  # fer's choice when other processes run (threads.py)
        console.info(f"device: {dev} ({label})" if dev.type != "mps" else "device: mps")
    return dev


@functools.cache
def cpuinfo() -> tuple[str, frozenset[str]] | None:
    """(model name, instruction-set flags) of the first CPU in /proc/cpuinfo; None where there is none."""
    name, flags = "", frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not name:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = frozenset(line.split(":", 1)[1].split())
                if name and flags:
                    break
    except OSError:
        return None
    return name, flags


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    info = cpuinfo()
    return (info[0] if info else "") or platform.processor() or platform.machine()


def cuda_has_bf16(device: torch.device) -> bool:
    """Tensor-core bf16: compute capability 8.0 (Ampere) or later."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def _tf32_switches() -> list[tuple[str, object, str, object, object]]:
    """(name, object, attribute, TF32 on, TF32 off) for CUDA matmuls and cuDNN convolutions: torch's
    fp32_precision settings on torch 2.9+, else the allow_tf32 flags (never both: torch refuses a mix)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return [("matmul", torch.backends.cuda.matmul, "fp32_precision", "tf32", "ieee"),
                ("conv", conv, "fp32_precision", "tf32", "ieee")]  # fmt: skip
    return [("matmul", torch.backends.cuda.matmul, "allow_tf32", True, False),
            ("conv", torch.backends.cudnn, "allow_tf32", True, False)]  # fmt: skip


def _tf32(on: bool) -> None:
    for _, obj, attr, yes, no in _tf32_switches():
        setattr(obj, attr, yes if on else no)


def _numerics() -> dict[str, object]:
    """Everything fp32_inference changes, to be put back as it was."""
    return {"benchmark": torch.backends.cudnn.benchmark} | {
        name: getattr(obj, attr) for name, obj, attr, _, _ in _tf32_switches()
    }


def _restore(saved: dict[str, object]) -> None:
    torch.backends.cudnn.benchmark = bool(saved["benchmark"])
    for name, obj, attr, _, _ in _tf32_switches():
        setattr(obj, attr, saved[name])


@contextlib.contextmanager
def fp32_inference() -> Iterator[None]:
    """Inside: fp32 matmuls and convolutions without TF32, and no cuDNN autotuning (its choice of
    algorithm may differ from run to run); outside: the settings as they were."""
    saved = _numerics()
    _tf32(False)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        _restore(saved)


def tune_for_training(device: torch.device) -> None:
    """CUDA only: let cuDNN time its convolution algorithms once per shape (every step has the same
    shapes) and run fp32 matmuls and convolutions on TF32 tensor cores. Training only: inference stays
    in plain fp32 so predictions do not depend on the GPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        _tf32(True)


def fused_optimizers(device: torch.device) -> bool:
    """CUDA: the fused SGD/Adam/AdamW step (one kernel for all parameters, and it takes the fp16 scaler's
    unscale in the same pass). Elsewhere torch's default implementation."""
    return device.type == "cuda"
