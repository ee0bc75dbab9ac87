"""Where a training run is, and the resume schema: the one place that writes, reads and validates the
state a `last.safetensors` carries, and puts a run back where it was (weights, optimizer, loss scale and
the epoch's permutation). Random streams are not saved: train.py derives them from (seed, epoch, step).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fercli.engine.lookahead import Lookahead
from fercli.engine.recipe import Recipe
from fercli.errors import USAGE, FerError
from fercli.files.checkpoint import (
    RESUME,
    load_tensors,
    optimizer_from_flat,
    optimizer_to_flat,
    read_checked,
    save_checkpoint,
)
from fercli.files.runs import resolve_checkpoint


def _new_sums() -> dict[str, Any]:
    return {"loss": 0.0, "correct": 0, "seen": 0}


@dataclass
class TrainState:
    """Everything that changes as a run trains and that resuming needs, besides tensors. `step` is the next
    step to run within `epoch` (0 at an epoch boundary)."""

    epoch: int = 1
    step: int = 0
    global_step: int = 0  # steps taken since the run began
    sums: dict[str, Any] = field(default_factory=_new_sums)  # this epoch: loss x faces, correct, faces
    history: list[dict[str, Any]] = field(default_factory=list)  # the rows of metrics.csv
    elapsed: float = 0.0  # seconds trained before this session (epoch clocks, validation included)
    best_acc: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one
    total_steps: int | None = None  # a --time run's is None until its first steps are timed
    patience: int = 0
    save_every: int = 0

    def new_epoch_sums(self) -> None:
        self.sums = _new_sums()

    def to_json(self, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> tuple[dict[str, Any], dict]:
        """(the checkpoint's "resume" metadata, the optimizer tensors to store beside the weights)."""
        opt_tensors, opt_rest = optimizer_to_flat(opt)
        doc = asdict(self) | {"optimizer": opt_rest, "scaler": scaler.state_dict() if scaler.is_enabled() else None}
        return doc, opt_tensors

    @classmethod
    def from_json(cls, path: str | Path, doc: Any) -> TrainState:
        """The resume metadata of a last.safetensors, checked field by field before training trusts it."""
        if not isinstance(doc, dict):
            raise FerError(f"{path}: resume state is not a JSON object")
        defaults = {"save_every": 0, "total_steps": None, "scaler": None}
        for name, ok in _FIELD_CHECKS.items():
            if not ok(doc.get(name, defaults.get(name))):
                raise FerError(f"{path}: resume state field '{name}' is missing or malformed")
        return cls(**{f.name: doc.get(f.name, defaults.get(f.name)) for f in fields(cls)})


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _row_ok(row: Any) -> bool:
    return isinstance(row, dict) and all(isinstance(k, str) and (_number(v) or v is None) for k, v in row.items())


_FIELD_CHECKS = {
    "epoch": lambda v: _count(v) and v >= 1,
    "step": _count, "global_step": _count, "best_epoch": _count, "bad_epochs": _count, "patience": _count,
    "save_every": _count, "elapsed": _number, "best_acc": _number,
    "sums": lambda v: isinstance(v, dict) and _number(v.get("loss")) and _count(v.get("correct"))
    and _count(v.get("seen")),
    "history": lambda v: isinstance(v, list) and all(_row_ok(r) for r in v),
    "total_steps": lambda v: v is None or (_count(v) and v >= 1),
    "optimizer": lambda v: isinstance(v, dict) and isinstance(v.get("param_groups"), list)
    and isinstance(v.get("scalars", {}), dict),
    "scaler": lambda v: v is None or (isinstance(v, dict) and all(_number(x) for x in v.values())),
}  # fmt: skip


def save_last(
    path: Path,
    st: TrainState,
    meta: dict[str, Any],
    model: nn.Module,
    ema: nn.Module | None,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    perm: torch.Tensor | None,
    train_faces: np.ndarray,
    lookahead: Lookahead | None = None,
) -> None:
    """last.safetensors: the weights a user would take (EMA's when on), plus the resume state: the raw
    weights under EMA, lookahead's slow copy, optimizer tensors and (mid-epoch) the permutation under
    "resume.", the rest as JSON."""
    doc, extra = st.to_json(opt, scaler)
    if perm is not None:
        extra["perm"] = perm
    if ema is not None:
        extra.update({f"raw.{k}": v for k, v in model.state_dict().items()})
    if lookahead is not None:
        extra.update(lookahead.tensors())
    save_checkpoint(path, (ema or model).state_dict(), meta | {"resume": doc}, extra, train_faces)


def open_resume(ref: str, project: str) -> tuple[Path, dict[str, Any], Recipe, TrainState]:
    """(checkpoint path, its metadata, its recipe, its training state), every part validated."""
    ckpt = resolve_checkpoint(ref, project, resume=True)
    meta, arch_args = read_checked(ckpt)
    if "resume" not in meta:
        raise FerError(f"{ckpt}: holds no resume state (only last.safetensors does)", USAGE)
    recipe = Recipe.from_dict(meta.get("recipe"), str(ckpt))
    if recipe.arch != meta["arch"] or arch_args != recipe.arch_args:
        raise FerError(f"{ckpt}: its recipe names another network than its weights")
    state = TrainState.from_json(ckpt, meta["resume"])
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
    doc: dict[str, Any],
    model: nn.Module,
    ema: nn.Module | None,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    n: int,
    lookahead: Lookahead | None = None,
) -> torch.Tensor | None:
    """Weights, optimizer (its buffers laid out like their parameters), the fp16 loss scale and the epoch's
    permutation from a last.safetensors whose resume metadata `doc` from_json has checked; anything that
    does not fit this run is one FerError. Returns the permutation (None at an epoch boundary). Generator
    states that older checkpoints hold are ignored: they only fit the device type they came from."""
    weights = load_tensors(ckpt)
    extra = load_tensors(ckpt, RESUME)
    try:
        model.load_state_dict(weights if ema is None else {k[4:]: v for k, v in extra.items() if k.startswith("raw.")})
        if ema is not None:
            ema.load_state_dict(weights)
        if lookahead is not None:
            lookahead.load(extra)
        optimizer_from_flat(opt, extra, doc["optimizer"])
        like_parameters(opt)
        if scaler.is_enabled() and isinstance(doc.get("scaler"), dict):
            scaler.load_state_dict(doc["scaler"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise FerError(f"{ckpt}: resume state does not fit this run ({str(e).strip().splitlines()[0][:120]})") from e
    perm = extra.get("perm")
    if perm is None:
        return None
    if perm.dtype != torch.int64 or tuple(perm.shape) != (n,) or not torch.equal(perm.sort().values, torch.arange(n)):
        raise FerError(f"{ckpt}: resume permutation does not fit the {n} train faces")
    return perm.to(device)
