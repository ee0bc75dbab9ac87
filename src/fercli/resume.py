"""Continuing a run: finding its last.safetensors, checking everything in it before it is trusted, and
putting the weights, optimizer, RNG states and permutation back so the run goes on exactly where it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fercli.checkpoint import RESUME, check_resume, load_tensors, optimizer_from_flat, read_checked
from fercli.errors import USAGE, FerError
from fercli.recipe import Recipe
from fercli.runs import resolve_checkpoint


def open_resume(ref: str, project: str) -> tuple[Path, dict[str, Any], Recipe, dict[str, Any]]:
    """(checkpoint path, its metadata, its recipe, its resume state), every part validated."""
    ckpt = resolve_checkpoint(ref, project, resume=True)
    meta, arch_args = read_checked(ckpt)
    if "resume" not in meta:
        raise FerError(f"{ckpt}: holds no resume state (only last.safetensors does)", USAGE)
    recipe = Recipe.from_dict(meta.get("recipe"), str(ckpt))
    if recipe.arch != meta["arch"] or arch_args != ({} if recipe.width is None else {"width": recipe.width}):
        raise FerError(f"{ckpt}: its recipe names another network than its weights")
    state = check_resume(ckpt, meta["resume"])
    data_ref = meta.get("data")
    if not (isinstance(data_ref, dict) and isinstance(data_ref.get("path"), str)
            and isinstance(data_ref.get("hash"), str)):  # fmt: skip
        raise FerError(f"{ckpt}: checkpoint does not say which data file it was trained on")
    return ckpt, meta, recipe, state


def like_parameters(opt: torch.optim.Optimizer) -> None:
    """Give every per-parameter optimizer buffer (momentum, Adam moments) its parameter's memory layout:
    checkpoints store tensors contiguous, and a channels_last parameter with a contiguous buffer sends
    every later optimizer step down a slower path."""
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for k, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def restore(
    ckpt: Path,
    state: dict[str, Any],
    model: nn.Module,
    ema: nn.Module | None,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    n: int,
) -> torch.Tensor | None:
    """Weights, optimizer (its buffers laid out like their parameters), the fp16 loss scale and the epoch's
    permutation from a last.safetensors; anything that does not fit this run is one FerError. Returns the
    permutation (None at an epoch boundary). Random streams are not restored: train.py derives them from
    (seed, epoch, step). Generator states that older checkpoints hold are ignored: they only fit the
    device type they came from."""
    weights = load_tensors(ckpt)
    extra = load_tensors(ckpt, RESUME)
    try:
        model.load_state_dict(weights if ema is None else {k[4:]: v for k, v in extra.items() if k.startswith("raw.")})
        if ema is not None:
            ema.load_state_dict(weights)
        optimizer_from_flat(opt, extra, state["optimizer"])
        like_parameters(opt)
        if scaler.is_enabled() and isinstance(state.get("scaler"), dict):
            scaler.load_state_dict(state["scaler"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise FerError(f"{ckpt}: resume state does not fit this run ({str(e).strip().splitlines()[0][:120]})") from e
    perm = extra.get("perm")
    if perm is None:
        return None
    if perm.dtype != torch.int64 or tuple(perm.shape) != (n,) or not torch.equal(perm.sort().values, torch.arange(n)):
        raise FerError(f"{ckpt}: resume permutation does not fit the {n} train faces")
    return perm.to(device)
