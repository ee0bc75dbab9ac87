"""Setting a training run up: the run folder (new or resumed), the whole uint8 train set on the device,
the network, its optimizer, EMA and gradient scaler. What it builds is a `Setup` that every phase of the
loop (train.py) reads, and a `TrainState` (state.py) that the loop advances.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fercli import console, models
from fercli.classes import IMAGE_SIZE
from fercli.data.crowd import Targets, training_targets
from fercli.data.leaks import face_thumbnails
from fercli.data.prepared import PreparedData
from fercli.defaults import PROJECT
from fercli.engine import distributed, weight_init
from fercli.engine.device import (
    needs_scaler,
    precision_name,
    training_dtype,
)
from fercli.engine.lookahead import Lookahead, set_bn_momentum
from fercli.engine.recipe import Recipe
from fercli.engine.state import TrainState, open_resume, restore, save_last
from fercli.errors import USAGE, FerError
from fercli.files.atomic import atomic_path, clear_leftovers
from fercli.files.checkpoint import MIN_STD
from fercli.files.runs import new_run_dir
from fercli.files.safepaths import owns
from fercli.hardware import fused_optimizers, pick_device, tune_for_training


@dataclass
class RunSettings:
    """How to run, as opposed to what to learn (the Recipe)."""

    data: str | None = None  # None: the run's own data when resuming, else fer-data.safetensors
    device: str = "auto"
    project: str = PROJECT
    name: str = "exp"
    # Stop after this many epochs without a better valid_acc (0 = never); None: 0, or a resumed run's own.
    patience: int | None = None
    json_lines: bool = False
    compile: bool = False
    log_every: int = 10  # at most one progress update (a CPU-GPU sync) per this many steps, when shown
    progress: bool = True
    stop_at_step: int | None = None  # act as if Ctrl-C came before this global step, or at once if past it
    save_every: int | None = None  # also save last every N steps; None: 0 (epoch ends only), or the resumed run's
    precision: str = "auto"  # training autocast: auto (measured on CPUs, bf16 on CUDA), fp32, bf16 or fp16


SMALL_SLICE = 32  # faces per process per step below which each rank's BatchNorm statistics get noisy


@dataclass
class Setup:
    """What set-up builds and the loop's phases read: fixed for this process's part of the run."""

    recipe: Recipe  # `labels: auto` resolved
    run: RunSettings
    group: distributed.Group
    device: torch.device
    run_dir: Path
    data: PreparedData
    targets: Targets
    x_train: torch.Tensor  # uint8 [N,48,48] on the device: batches are gathered there
    y_train: torch.Tensor  # int64 [N] class labels, or float32 [N,classes] FER+ vote shares
    x_val: np.ndarray  # uint8 [M,48,48]; predict_probs moves it in batches
    y_val: torch.Tensor  # int64 [M]: val is always scored against class labels
    mean: float  # of the train pixels in [0, 1]; saved, so every later command normalises alike
    std: float
    train_faces: np.ndarray  # thumbnails saved with the weights: eval can spot a leaky split
    model: nn.Module  # channels_last
    ema: nn.Module | None
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # a no-op unless fp16
    step_fn: Callable[[torch.Tensor], torch.Tensor]  # the model as trained: DDP-wrapped, compiled
    amp_dtype: torch.dtype | None  # None: fp32
    batch: int  # global batch
    local: int  # this rank's slice of every global batch
    steps_per_epoch: int  # the last partial batch is dropped; the next permutation covers it
    generator: torch.Generator  # on the device; reseeded per (seed, epoch, step)
    teachers: list[dict[str, str]] = field(default_factory=list)  # distillation's teachers: path, sha256
    # alternate_flip: bool [N] on the device, whether each train face is flipped in odd epochs (even: not);
    # drawn from the seed alone, so a resumed run draws it again. None: flips are left to chance.
    flip_first: torch.Tensor | None = None
    lookahead: Lookahead | None = None  # the slow copy of the weights, when the recipe asks for it

    def epochs_in(self, steps: int) -> int:
        """Epochs that `steps` steps touch (the last may be partial)."""
        return -(-steps // self.steps_per_epoch)

    def meta(self, st: TrainState, row: dict[str, Any] | None) -> dict[str, Any]:
        """A checkpoint's metadata: all that eval, predict and explain need to rebuild and use the model."""
        r = self.recipe
        return {
            "arch": r.arch, "arch_args": r.arch_args, "classes": list(self.targets.classes),
            "image_size": IMAGE_SIZE, "normalize": {"mean": self.mean, "std": self.std}, "recipe": r.to_dict(),
            "data": {"path": str(self.run.data), "hash": self.data.content_hash}, "metrics": row,
            "best": {"valid_acc": st.best_acc, "epoch": st.best_epoch},
        } | ({"teachers": self.teachers} if self.teachers else {})  # fmt: skip

    def save_last(self, st: TrainState, row: dict[str, Any] | None, perm: torch.Tensor | None) -> None:
        save_last(self.run_dir / "last.safetensors", st, self.meta(st, row), self.model, self.ema, self.opt,
                  self.scaler, perm, self.train_faces, self.lookahead)  # fmt: skip

    def write_args(self, total_steps: int | None) -> None:
        """args.json: how the run was asked for, and (once fixed) its step count."""
        args = {"recipe": self.recipe.to_dict(), "data": self.run.data, "device": str(self.device),
                "patience": self.run.patience, "processes": self.group.world,
                "precision": precision_name(self.amp_dtype), "total_steps": total_steps}  # fmt: skip
        with atomic_path(self.run_dir / "args.json") as tmp:
            tmp.write_text(json.dumps(args, indent=2) + "\n")


def make_optimizer(model: nn.Module, r: Recipe, device: torch.device | None = None) -> torch.optim.Optimizer:
    """Weight decay on conv and linear weights only, never on BatchNorm parameters or biases; the fused
    implementation where the device policy takes it (one kernel per step, not one per tensor). With
    `bn_bias_lr` the BatchNorm biases form a third group (lr_scales; a recipe without it keeps the two
    groups its checkpoints' optimizer state holds)."""
    params = [p for p in model.parameters() if p.requires_grad]  # not `whiten`'s fixed filters
    decay = [p for p in params if p.ndim > 1]
    bn_biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and
                 m.bias is not None} if r.bn_bias_lr != 1 else set()  # fmt: skip
    no_decay = [p for p in params if p.ndim <= 1 and id(p) not in bn_biases]
    groups = [{"params": decay, "weight_decay": r.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if bn_biases:
        biases = [p for p in params if id(p) in bn_biases]
        groups.append({"params": biases, "weight_decay": 0.0})
    impl = {"fused": True} if device is not None and fused_optimizers(device) else {}
    if r.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=True, **impl)
    if r.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=r.lr, betas=(r.momentum, 0.999), **impl)
    return torch.optim.Adam(groups, lr=r.lr, **impl)


def lr_scales(r: Recipe) -> tuple[float, ...]:
    """What the schedule's rate is multiplied by in each of make_optimizer's groups: taken from the recipe,
    not from the optimizer state a resumed checkpoint brings."""
    return (1.0, 1.0) if r.bn_bias_lr == 1 else (1.0, 1.0, r.bn_bias_lr)


def first_flips(r: Recipe, n: int, device: torch.device) -> torch.Tensor | None:
    """alternate_flip's flips of the first epoch: each of the n train faces with chance 1/2 (the seed's
    own stream, apart from every other)."""
    if not r.alternate_flip:  # (which recipe_problem allows only with flip > 0, so with augmentation)
        return None
    return (torch.rand(n, generator=torch.Generator().manual_seed(r.seed)) < 0.5).to(device)


def pixel_mean_std(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of uint8 pixels scaled to [0,1], from a 256-bin histogram (no float copy of the set)."""
    hist = np.bincount(images.reshape(-1), minlength=256).astype(np.float64)
    levels = np.arange(256) / 255.0
    mean = float(hist @ levels / hist.sum())
    var = float(hist @ (levels - mean) ** 2 / hist.sum())
    return mean, max(var**0.5, MIN_STD)


def probe_key(recipe: Recipe) -> str:
    """What the CPU precision probe caches its answer under, besides the CPU and the batch."""
    return f"{recipe.arch}:{recipe.width}"


def set_up(recipe: Recipe, run: RunSettings, resume: str | None,
           group: distributed.Group) -> tuple[Setup, TrainState, torch.Tensor | None]:  # fmt: skip
    """Everything before the first step; returns the setup, the state to continue from (a new run's
    is fresh) and a resumed epoch's permutation (None at an epoch boundary). The caller's `run` is left
    as given: what resuming and defaults settle goes into the copy the Setup holds."""
    run = replace(run)
    # ---- 1. the run being resumed, if any: its recipe and state win over the command line's ----------
    st = TrainState()
    if resume is not None:
        ckpt, meta, recipe, st = open_resume(resume, run.project)
        run.patience = st.patience if run.patience is None else run.patience  # a value given now wins
        run.save_every = st.save_every if run.save_every is None else run.save_every
        if group.main:
            clear_leftovers(ckpt.parent)  # a killed writer's temporaries (rank 0 is the run's one writer)
        run.data = run.data or meta["data"]["path"]
        console.info(f"resuming {ckpt.parent} at epoch {st.epoch} step {st.step}")
    if run.data is None:
        from fercli.data.prepared import DEFAULT_DATA

        console.default_used("--data", DEFAULT_DATA)
        run.data = DEFAULT_DATA
    run.save_every = run.save_every or 0
    run.patience = run.patience or 0
    if run.patience < 0:
        raise FerError(f"--patience must be 0 or more epochs, got {run.patience}", USAGE)
    if run.save_every < 0:
        raise FerError(f"--save-every must be 0 or more steps, got {run.save_every}", USAGE)
    st.patience, st.save_every = run.patience, run.save_every
    device = distributed.join(group, pick_device(run.device))

    # ---- 2. data: the whole uint8 train set moves to the device once ---------------------------------
    data = PreparedData.open(run.data)
    if resume is not None and data.content_hash != meta["data"]["hash"]:
        raise FerError(f"{run.data}: data changed since the run started (hash {data.content_hash}, "
                       f"run used {meta['data']['hash']})")  # fmt: skip
    # Targets: FER2013 labels, or the FER+ crowd's majority or vote distribution (crowd.py); faces
    # without a target (no clear majority, not a face) are left out. `auto` is resolved once, here.
    targets = training_targets(data, recipe.labels)
    recipe = replace(recipe, labels=targets.mode)
    tr, va = targets.train, targets.val
    what = "labeled faces" if targets.mode == "fer2013" else f"faces with a FER+ {targets.mode} target"
    if len(tr) == 0:
        raise FerError(f"{run.data}: no {what} in the train split")
    if len(va) == 0:
        raise FerError(f"{run.data}: no {what} in the val split (prep with --val-frac > 0)")
    train_u8 = data.images[tr]  # one gather from the memory map: uint8 [N,48,48]
    teachers: list[dict[str, str]] = []
    if recipe.teachers:  # the teachers' predictions take `distill` of each target (distill.py)
        from fercli.engine.distill import teacher_targets

        recorded = meta.get("teachers", []) if resume is not None else None
        mixed, teachers = teacher_targets(recipe.teachers, recipe.distill, targets, data, train_u8, device,
                                          recorded)  # fmt: skip
        targets = replace(targets, train_y=mixed)
    if resume is not None:  # the run's own normalisation, which its checkpoints already carry
        mean, std = meta["normalize"]["mean"], meta["normalize"]["std"]
    else:
        mean, std = pixel_mean_std(train_u8)
    n = len(tr)
    batch = min(recipe.batch, n)
    if batch % group.world:
        raise FerError(f"--batch {batch} is not a multiple of the {group.world} torchrun processes", USAGE)
    steps_per_epoch = n // batch
    if st.total_steps is None and not recipe.time:  # a --time run fixes it once its first steps are timed
        st.total_steps = steps_per_epoch * recipe.epochs

    # ---- 3. network, optimizer, EMA, scaler ------------------------------------------------------------
    torch.manual_seed(recipe.seed)
    n_classes = len(targets.classes)
    build = lambda: models.create(recipe.arch, n_classes, **recipe.arch_args)  # noqa: E731
    # channels_last on every device: 1.46x on this project's CPU (vgg4s: 815 vs 559 images/s), and what
    # cuDNN's tensor-core kernels want.
    model = build().to(device, memory_format=torch.channels_last)
    if resume is None:  # a resumed run's checkpoint brings its weights
        if recipe.dirac:
            weight_init.dirac(model)
        if recipe.whiten:
            weight_init.whiten(model, train_u8, mean, std)
    if recipe.whiten:
        weight_init.freeze_whitening(model)
    set_bn_momentum(model, recipe.bn_momentum)
    amp_dtype = training_dtype(device, run.precision, build, probe_key(recipe), batch // group.world)
    torch.manual_seed(recipe.seed)  # the precision probe may have drawn from the global generator
    tune_for_training(device)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler(amp_dtype))
    opt = make_optimizer(model, recipe, device)
    ema = deepcopy(model).eval() if recipe.ema else None
    lookahead = Lookahead(model) if recipe.lookahead else None  # a resumed run's is restored below
    ddp = distributed.wrap(model, group)  # averages gradients across ranks in backward

    # ---- 4. the run folder: the resumed one, or a new one rank 0 makes and names to the others ---------
    if resume is not None:
        run_dir = ckpt.parent
    else:
        run_dir = Path(distributed.share_text(str(new_run_dir(run.project, run.name)) if group.main else "", group))
    s = Setup(
        recipe=recipe, run=run, group=group, device=device, run_dir=run_dir, data=data, targets=targets,
        x_train=torch.from_numpy(train_u8).to(device),
        y_train=torch.from_numpy(np.ascontiguousarray(targets.train_y)).to(device),
        x_val=data.images[va], y_val=torch.from_numpy(targets.val_y), mean=mean, std=std,
        train_faces=face_thumbnails(train_u8), model=model, ema=ema, opt=opt, scaler=scaler,
        step_fn=torch.compile(ddp) if run.compile else ddp, amp_dtype=amp_dtype, batch=batch,
        local=batch // group.world, steps_per_epoch=steps_per_epoch, generator=torch.Generator(device=device),
        teachers=teachers, flip_first=first_flips(recipe, n, device), lookahead=lookahead,
    )  # fmt: skip
    perm = None
    if resume is not None:
        perm = restore(ckpt, meta["resume"], model, ema, opt, scaler, device, n, lookahead)
    else:
        if group.main:
            s.write_args(st.total_steps)
        console.info(f"run folder: {s.run_dir}")
    owns(s.run_dir)  # its checkpoints are read back (resume) and rewritten: not inputs to protect
    _announce(s)
    return s, st, perm


def _announce(s: Setup) -> None:
    r = s.recipe
    args = ", ".join(f"{k} {v}" for k, v in r.arch_args.items())
    net = f"{r.arch} ({args})" if args else r.arch
    length = f"{r.epochs} epochs" if not r.time else f"a {console.format_duration(r.time)} budget"
    precision = f"{precision_name(s.amp_dtype)} autocast" if s.amp_dtype is not None else "fp32"
    if s.scaler.is_enabled():
        precision += " with a gradient scaler"
    mode, k = s.targets.mode, len(s.targets.classes)
    aim = "" if mode == "fer2013" else f" (FER+ {mode} targets, {k} classes)"
    if s.teachers:
        aim += f" distilled from {console.plural(len(s.teachers), 'teacher')} ({r.distill:g})"
    console.info(f"{net}, {len(s.y_train)} train / {len(s.y_val)} val faces{aim}, batch {s.batch}, {length}, "
                 f"{r.optimizer} lr {r.lr}, {precision}")  # fmt: skip
    if s.group.active:
        console.info(f"torchrun: {s.group.world} processes, {s.local} faces each per step")
        if s.local < SMALL_SLICE:
            console.warn(f"{s.local} faces per process per step: BatchNorm statistics over so few are noisy "
                         f"(no SyncBatchNorm); --batch {SMALL_SLICE * s.group.world} or more, with --lr")  # fmt: skip
