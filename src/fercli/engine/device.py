"""Training precision per device (which device, and how inference runs there: fercli/hardware.py).

Training: bf16 autocast on CUDA GPUs of compute capability 8 or more (tensor cores do bf16), fp16 with a
gradient scaler below that (T4, V100: bf16 is emulated there), fp32 on MPS; cuDNN autotuning and TF32
matmuls on CUDA; channels_last everywhere. Inference (eval, predict, the explanations): fp32 on every
device, with channels_last models and inputs, so a prediction and its `--probs` do not depend on the
device beyond float rounding (no autocast, no TF32).

Training precision on the CPU is chosen by measurement, never by assumption: bf16 autocast (oneDNN)
is much faster on some CPUs and much slower on others, and the answer differs per network. Measured on
this project's 2-core AMD EPYC (avx512_bf16, no AMX), torch 2.14.1, batch 128, channels_last:
vgg4s 815 (fp32) vs 1447 (bf16) images/s; on a Xeon with AMX an earlier session saw full-width vgg4
2.5x faster in bf16 but vgg4s 6x slower. So the first run of a network on a CPU times a few training
steps both ways and caches the winner (in $XDG_CACHE_HOME/fercli, else ~/.cache/fercli).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fercli import console
from fercli.engine.threads import others_running
from fercli.errors import USAGE, FerError
from fercli.files import safejson
from fercli.hardware import cpu_name, cpuinfo, cuda_has_bf16

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# bf16 must beat fp32 by this factor to be chosen: its rounding costs a little accuracy per step.
BF16_MIN_SPEEDUP = 1.15
# A probe is cached only when it was steady: each precision is timed twice, interleaved, and the two
# timings of each must agree within this factor, with no other process runnable when it began. Measured
# by a session of this project beside three busy processes: fp32 328 vs bf16 126 images/s, where the
# idle answer was 844 vs 1,399 (cached, it made every later run 1.66x slower).
PROBE_MAX_SPREAD = 1.25
# After the first epoch: a run training this many times faster than its cached probe said the picked
# precision would (training adds augmentation and validation, so it is normally slower) drops the entry,
# so that the next run probes again.
PROBE_DISAGREES = 1.3


def _cpu_key() -> str:
    """What a CPU timing depends on: the model, its instruction-set flags, threads and torch."""
    info = cpuinfo()
    flags = " ".join(sorted(info[1])) if info else ""
    raw = f"{cpu_name()}|{flags}|{torch.get_num_threads()}|{torch.__version__}"
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fercli"


def _time_steps(model: nn.Module, batch: int, dtype: torch.dtype | None, steps: int = 4) -> float:
    """Seconds per training step (forward, backward, SGD step) on random faces, after one warm-up step."""
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 1, 48, 48).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch,))
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def _probe_cache(net_key: str, batch: int) -> tuple[str, Path, dict[str, Any]]:
    """(this run's key, the cache file, its entries: {} when missing or unreadable). The key: the CPU,
    thread count, torch version, network and batch (capped at the probe's 128)."""
    key = f"{_cpu_key()}|{net_key}|{min(batch, 128)}"
    path = cache_dir() / "cpu-precision.json"
    try:
        cache = safejson.loads(path.read_bytes(), 1 << 20)
    except (OSError, ValueError):
        cache = {}
    return key, path, cache if isinstance(cache, dict) else {}


def _save_probe_cache(path: Path, cache: dict[str, Any]) -> bool:
    """Write the cache atomically; False when it cannot be written (that only means probing again)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    except OSError:
        return False
    return True


def cpu_training_dtype(build: Callable[[], nn.Module], net_key: str, batch: int) -> torch.dtype | None:
    """bf16 when a timed probe finds it at least BF16_MIN_SPEEDUP times faster than fp32, else None
    (fp32). The answer is cached per CPU, thread count, torch version, network and batch."""
    key, path, cache = _probe_cache(net_key, batch)
    if key not in cache:
        if not torch.backends.mkldnn.is_available() or not _bf16_native():
            cache[key] = {"fp32": None, "bf16": None, "pick": "fp32"}
        else:
            probe_batch = min(batch, 128)
            others = others_running()
            state = torch.get_rng_state()
            nets = {d: build().to(memory_format=torch.channels_last).train() for d in (None, torch.bfloat16)}
            times: dict[Any, list[float]] = {None: [], torch.bfloat16: []}
            for _ in range(2):  # interleaved, so a burst of other work shows as disagreement
                for d, net in nets.items():
                    times[d].append(_time_steps(net, probe_batch, d))
            torch.set_rng_state(state)  # the probe must not shift the run's random numbers
            fp32, bf16 = min(times[None]), min(times[torch.bfloat16])
            spread = max(max(t) / min(t) for t in times.values())
            pick = "bf16" if fp32 / bf16 >= BF16_MIN_SPEEDUP else "fp32"
            cache[key] = {"fp32": round(probe_batch / fp32, 1), "bf16": round(probe_batch / bf16, 1), "pick": pick}
            if others or spread > PROBE_MAX_SPREAD:
                c = cache.pop(key)
                console.info(f"precision probe on this CPU: fp32 {c['fp32']:,.0f} vs bf16 {c['bf16']:,.0f} images/s "
                             f"-> {pick} for this run; not cached: "
                             + ("other processes were running" if others else
                                f"its repeated timings differ by {spread:.2f}x (a busy machine?)"))  # fmt: skip
                return torch.bfloat16 if pick == "bf16" else None
        _save_probe_cache(path, cache)
        c = cache[key]
        if c["fp32"] is not None:
            console.info(f"precision probe on this CPU: fp32 {c['fp32']:,.0f} vs bf16 {c['bf16']:,.0f} images/s "
                         f"-> {c['pick']} (cached in {path})")  # fmt: skip
    return torch.bfloat16 if cache[key].get("pick") == "bf16" else None


def check_probe(net_key: str, batch: int, images_per_s: float) -> None:
    """After a run's first epoch: drop the cached probe when the run trained PROBE_DISAGREES times faster
    than the probe said the picked precision does (the probe ran on a busy machine)."""
    key, path, cache = _probe_cache(net_key, batch)
    entry = cache.get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get(entry.get("pick")), (int, float)):
        return
    probed = float(entry[entry["pick"]])
    if images_per_s <= PROBE_DISAGREES * probed:
        return
    del cache[key]
    if not _save_probe_cache(path, cache):
        return
    console.info(f"this run trains at {images_per_s:,.0f} images/s, faster than the cached precision probe "
                 f"measured ({probed:,.0f}, {entry['pick']}): it was probably taken on a busy machine, and the "
                 "next run probes again")  # fmt: skip


def _bf16_native() -> bool:
    """The CPU has bf16 arithmetic (AVX512-BF16 or AMX); elsewhere oneDNN emulates it, slowly."""
    info = cpuinfo()
    if info is None:
        return platform.machine() == "arm64"  # Apple silicon and Graviton: leave it to the probe
    return "avx512_bf16" in info[1] or "amx_bf16" in info[1]


def training_dtype(device: torch.device, choice: str, build: Callable[[], nn.Module], net_key: str,
                   batch: int) -> torch.dtype | None:  # fmt: skip
    """The autocast dtype for training (None: plain fp32). `choice` is --precision: auto, fp32, bf16 or
    fp16 (fp16 trains with a gradient scaler: needs_scaler)."""
    if choice not in PRECISIONS:
        raise FerError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{choice}'", USAGE)
    if choice == "fp32" or (device.type == "mps" and choice == "auto"):
        return None
    if choice in ("bf16", "fp16"):
        return torch.bfloat16 if choice == "bf16" else torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_bf16(device) else torch.float16
    return cpu_training_dtype(build, net_key, batch)


def needs_scaler(dtype: torch.dtype | None) -> bool:
    """fp16's narrow exponent underflows small gradients: the loss is scaled (torch.amp.GradScaler)."""
    return dtype == torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
