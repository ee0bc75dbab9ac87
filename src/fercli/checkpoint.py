"""Checkpoints: safetensors weights plus JSON metadata with everything needed to rebuild and use the model.

A checkpoint holds the network's state_dict under its own names, so `safetensors.torch.load_file` and
`models.create(meta["arch"], **meta["arch_args"])` rebuild it with no fercli training code. `last`
checkpoints also hold the resume state under the "resume." prefix: optimizer tensors, EMA weights,
RNG states and the epoch's permutation, with the non-tensor parts in the metadata. Never pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fercli import __version__
from fercli.atomic import atomic_path
from fercli.classes import CLASSES, IMAGE_SIZE
from fercli.errors import BAD_INPUT, NOT_FOUND, FerError
from fercli.safefile import read_meta_json

META_KEY = "fercli-model"
RESUME = "resume."
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike,
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    resume: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write atomically: a kill at any moment leaves the previous file intact."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    for k, v in (resume or {}).items():
        tensors[RESUME + k] = v.detach().to("cpu").contiguous()
    full = {"format": "fercli-model", "format_version": FORMAT_VERSION, "fercli_version": __version__, **meta}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(full)})


def _validate_meta(path: str, meta: dict[str, Any]) -> None:
    from fercli import models

    arch = meta.get("arch")
    if not isinstance(arch, str) or arch not in models.names():
        raise FerError(f"{path}: checkpoint names an unknown network '{str(arch)[:40]}'")
    args = meta.get("arch_args", {})
    if not isinstance(args, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float, list)) for k, v in args.items()
    ):
        raise FerError(f"{path}: checkpoint has malformed arch_args")
    if meta.get("classes") != list(CLASSES):
        raise FerError(f"{path}: checkpoint classes do not match FER2013's seven emotions")
    norm = meta.get("normalize")
    if not (isinstance(norm, dict) and all(isinstance(norm.get(k), (int, float)) for k in ("mean", "std"))):
        raise FerError(f"{path}: checkpoint lacks its normalisation (mean, std)")
    if norm["std"] <= 0:
        raise FerError(f"{path}: checkpoint normalisation std must be positive")
    if meta.get("image_size") != IMAGE_SIZE:
        raise FerError(f"{path}: checkpoint image size is not {IMAGE_SIZE}")


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The validated metadata of a checkpoint (no tensors read)."""
    _, meta, _ = read_meta_json(path, META_KEY, "checkpoint")
    _validate_meta(str(path), meta)
    return meta


def load_tensors(path: str | os.PathLike, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Weights (prefix None) or the resume state (prefix "resume.") of a checkpoint, on the CPU."""
    from safetensors import safe_open

    out = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for k in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if prefix is None and not k.startswith(RESUME):
                    out[k] = f.get_tensor(k)
                elif prefix is not None and k.startswith(prefix):
                    out[k[len(prefix) :]] = f.get_tensor(k)
    except (OSError, RuntimeError, ValueError) as e:
        raise FerError(f"{path}: cannot read checkpoint tensors ({e})") from e
    return out


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a checkpoint declares and load its weights, in eval mode."""
    from fercli import models

    meta = read_meta(path)
    model = models.create(
        meta["arch"], **{k: tuple(v) if isinstance(v, list) else v for k, v in meta.get("arch_args", {}).items()}
    )
    state = load_tensors(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise FerError(f"{path}: weights do not fit network '{meta['arch']}' ({detail[:160]})", BAD_INPUT) from e
    return model.to(device).eval(), meta


# ---- optimizer state <-> flat tensors + JSON ---------------------------------------------------------


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors ("opt.<param>.<name>") and a JSON-able rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{name}"] = v
            else:
                scalars[f"{pid}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in rest.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def find_checkpoint(ref: str | os.PathLike) -> Path:
    """A checkpoint path from a run folder (its best, else last) or a file path."""
    p = Path(ref)
    if p.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (p / name).exists():
                return p / name
        raise FerError(f"{p}: run folder holds no best.safetensors or last.safetensors", NOT_FOUND)
    if not p.exists():
        raise FerError(f"{p}: no such checkpoint", NOT_FOUND)
    return p
