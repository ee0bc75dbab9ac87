"""Checkpoints: safetensors weights plus JSON metadata with everything needed to rebuild and use the model.

A checkpoint holds the network's state_dict under its own names, so `safetensors.torch.load_file` and
`models.create(meta["arch"], len(meta["classes"]), **meta["arch_args"])` rebuild it with no fercli
training code. `last` checkpoints also hold the resume state under the "resume." prefix: optimizer
tensors, raw weights under EMA and the epoch's permutation, with the non-tensor parts (and the fp16 loss
scale) in the metadata, laid out and validated by engine/state.py; no random-generator state (training
derives its streams). Never pickle.
"""

from __future__ import annotations

import base64
import errno
import json
import math
import os
import re
import zlib
from typing import Any

import numpy as np
import torch
from torch import nn

from fercli.classes import IMAGE_SIZE
from fercli.defaults import TTA_MODES
from fercli.errors import BAD_INPUT, USAGE, FerError
from fercli.files.atomic import atomic_path
from fercli.files.safefile import read_meta_json
from fercli.version import __version__

META_KEY = "fercli-model"
RESUME = "resume."
# Metadata key of the training faces' thumbnails (prepared.face_thumbnails, uint8 [N,64]), zlib + base64:
# kept out of the tensors so that safetensors' load_file still gives exactly the network's state_dict.
TRAIN_FACES = "fercli-train-faces"
MAX_TRAIN_FACES = 300_000  # ten times FER2013's training set; a cap keeps a hostile file's memory bounded
FORMAT_VERSION = 1
MAX_CLASSES = 64
# Class names go into CSV headers (p_<class>), figure titles, file names and the terminal: letters, digits,
# '_', '-' and '.' only, so none of them needs quoting or escaping anywhere.
CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
MIN_STD = 1e-3  # of pixels scaled to [0, 1]; training clamps to it too (a near-constant data set)


def save_checkpoint(
    path: str | os.PathLike,
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    resume: dict[str, torch.Tensor] | None = None,
    train_faces: np.ndarray | None = None,
) -> None:
    """Write atomically: a kill at any moment leaves the previous file intact."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    for k, v in (resume or {}).items():
        tensors[RESUME + k] = v.detach().to("cpu").contiguous()
    full = {"format": "fercli-model", "format_version": FORMAT_VERSION, "fercli_version": __version__, **meta}
    metadata = {META_KEY: json.dumps(full)}
    if train_faces is not None:
        metadata[TRAIN_FACES] = base64.b64encode(zlib.compress(np.ascontiguousarray(train_faces).tobytes())).decode()
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as e:  # the Rust writer's I/O errors: hand atomic_path an OSError with errno
            m = re.search(r"os error (\d+)", str(e))
            code = int(m.group(1)) if m else errno.EIO
            raise OSError(code, os.strerror(code)) from e


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _arch_arg_ok(v: Any) -> bool:
    """Network arguments are small numbers (width, fc, dropout) or short lists of small ints (convs):
    bounds that keep a hostile file from declaring a network too big to build."""
    if isinstance(v, list):
        return len(v) <= 16 and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= 64 for i in v)
    return _number(v) and 0 <= v <= 65536


def _validate_meta(path: str, meta: dict[str, Any]) -> None:
    from fercli import models

    arch = meta.get("arch")
    if not isinstance(arch, str) or arch not in models.names():
        raise FerError(f"{path}: checkpoint names an unknown network '{str(arch)[:40]}'")
    args = meta.get("arch_args", {})
    if not isinstance(args, dict) or not all(isinstance(k, str) and _arch_arg_ok(v) for k, v in args.items()):
        raise FerError(f"{path}: checkpoint has malformed arch_args")
    classes = meta.get("classes")
    names_ok = isinstance(classes, list) and all(isinstance(c, str) and CLASS_NAME.fullmatch(c) for c in classes)
    if not (names_ok and 2 <= len(classes) <= MAX_CLASSES and len(set(classes)) == len(classes)):
        raise FerError(f"{path}: checkpoint classes must be 2..{MAX_CLASSES} distinct names of 1-40 letters, "
                       "digits, '_', '-' or '.'")  # fmt: skip
    norm = meta.get("normalize")
    if not (isinstance(norm, dict) and all(_number(norm.get(k)) for k in ("mean", "std"))):
        raise FerError(f"{path}: checkpoint lacks its normalisation (mean, std)")
    if not (0 <= norm["mean"] <= 1 and MIN_STD <= norm["std"] <= 1):  # a tiny std overflows float32
        raise FerError(f"{path}: checkpoint normalisation must have mean in [0, 1] and std in [{MIN_STD}, 1]")
    if meta.get("image_size") != IMAGE_SIZE:
        raise FerError(f"{path}: checkpoint image size is not {IMAGE_SIZE}")


def tta_mode(tta: bool | str) -> str:
    """A TTA setting as commands and Python give it (True: flip, False: none, or a mode's name) -> the
    mode's name (defaults.TTA_MODES)."""
    if isinstance(tta, bool):
        return "flip" if tta else "none"
    if tta in TTA_MODES:
        return tta
    raise FerError(f"tta {tta!r}: choose from {', '.join(TTA_MODES)}, True or False", USAGE)


def model_tta(meta: dict[str, Any], tta: bool | str | None) -> str:
    """The test-time augmentation a command uses (infer.inference.TTA_MODES): as asked, else the flip if
    the checkpoint's training validated with it (so eval, predict and training's valid_acc agree), else
    none (checkpoints from before recipes recorded it)."""
    if tta is not None:
        return tta_mode(tta)
    recipe = meta.get("recipe")
    return tta_mode(bool(recipe.get("tta", False)) if isinstance(recipe, dict) else False)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The validated metadata of a checkpoint (no tensors read)."""
    return _read(path)[1]


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    header, meta, _ = read_meta_json(path, META_KEY, "checkpoint")
    _validate_meta(str(path), meta)
    return header, meta


def load_tensors(path: str | os.PathLike, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Weights (prefix None) or the resume state (prefix "resume.") of a checkpoint, on the CPU."""
    from safetensors import SafetensorError, safe_open

    out = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for k in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if prefix is None and not k.startswith(RESUME):
                    out[k] = f.get_tensor(k)
                elif prefix is not None and k.startswith(prefix):
                    out[k[len(prefix) :]] = f.get_tensor(k)
    except (OSError, RuntimeError, ValueError, SafetensorError) as e:
        raise FerError(f"{path}: cannot read checkpoint tensors ({e})") from e
    return out


def read_checked(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validated metadata plus the network arguments, after checking that the stored weights are exactly
    the declared network's: names and shapes, compared on the meta device (no memory), so a file can
    never make us build a network bigger than the weights it holds."""
    from fercli import models

    header, meta = _read(path)
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in meta.get("arch_args", {}).items()}
    try:
        with torch.device("meta"):
            net = models.create(meta["arch"], len(meta["classes"]), **args)
            shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    except FerError as e:
        raise FerError(f"{path}: checkpoint arch_args do not build '{meta['arch']}' ({e})") from e
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError) as e:  # torch's own checks (dropout > 1)
        raise FerError(f"{path}: checkpoint arch_args do not build '{meta['arch']}' ({str(e)[:120]})") from e
    stored = {k: e["shape"] for k, e in header.items() if not k.startswith(RESUME)}
    if shapes != stored:
        diff = sorted(set(shapes) ^ set(stored)) or [k for k in shapes if shapes[k] != stored[k]]
        raise FerError(f"{path}: weights do not fit network '{meta['arch']}' (first mismatch: {diff[0][:60]})")
    return meta, args


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a checkpoint declares and load its weights, in eval mode."""
    from fercli import models

    meta, args = read_checked(path)
    model = models.create(meta["arch"], len(meta["classes"]), **args)
    state = load_tensors(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # e.g. a dtype the network cannot take
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise FerError(f"{path}: weights do not fit network '{meta['arch']}' ({detail[:160]})", BAD_INPUT) from e
    # channels_last as in training: the layout the fast CPU (oneDNN) and cuDNN kernels want
    return model.to(device, memory_format=torch.channels_last).eval(), meta


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


# How an optimizer steps, not what it has learned: these follow the device it runs on now. A run saved on
# CUDA (fused) and resumed on MPS must not call a fused SGD MPS lacks; one saved on a CPU and resumed on
# CUDA should take the fused kernel (fp16 otherwise adds a sync per step to unscale).
IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable", "differentiable")


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    """Load the saved state into `opt`, keeping `opt`'s own IMPLEMENTATION_FLAGS (they fit this device)."""
    fresh = [{k: g[k] for k in IMPLEMENTATION_FLAGS if k in g} for g in opt.param_groups]
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in rest.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})
    for group, flags in zip(opt.param_groups, fresh):
        for k in IMPLEMENTATION_FLAGS:
            if k in flags:
                group[k] = flags[k]
            else:
                group.pop(k, None)


def train_faces(path: str | os.PathLike) -> np.ndarray | None:
    """The training faces' thumbnails a checkpoint holds (uint8 [N,64]), or None (older checkpoints)."""
    from fercli.files.safefile import read_header

    _, meta, _ = read_header(path)
    raw = meta.get(TRAIN_FACES)
    if raw is None:
        return None
    most = MAX_TRAIN_FACES * 64
    too_many = f"{path}: checkpoint metadata '{TRAIN_FACES}' holds over {MAX_TRAIN_FACES:,} faces"
    if len(raw) > (most + most // 1000 + 1024) * 4 // 3 + 4:  # base64 of zlib's worst case (it adds 5 B per 16 kB)
        raise FerError(too_many)
    try:
        z = zlib.decompressobj()
        data = z.decompress(base64.b64decode(raw, validate=True), MAX_TRAIN_FACES * 64)  # bounded: no zip bomb
    except (ValueError, zlib.error) as e:
        raise FerError(f"{path}: checkpoint metadata '{TRAIN_FACES}' is malformed") from e
    if z.unconsumed_tail:
        raise FerError(too_many)
    if len(data) % 64:
        raise FerError(f"{path}: checkpoint metadata '{TRAIN_FACES}' is malformed")
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, 64)
