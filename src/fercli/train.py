"""The training engine: one linear sequence of phases, data resident on the device.

Phases: (1) resume or start a run folder, (2) put the whole uint8 train and val sets on the device,
(3) build the network and optimizer, (4) the epoch loop: permute, then per step index a batch,
normalise, augment on the device, forward, backward, step; validate at each epoch's end; write
checkpoints, metrics.csv and curves.png. CPU-GPU sync points are marked "sync".

Under torchrun (see distributed.py) every rank runs this same sequence on its own slice of each
global batch; the permutation, augmentation draws and decisions (best epoch, early stop, Ctrl-C)
are identical on all ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import csv
import json
import signal
import time
from copy import deepcopy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fercli import console, distributed, models
from fercli.atomic import atomic_path, clear_leftovers
from fercli.augment import augment
from fercli.checkpoint import (
    MIN_STD,
    optimizer_to_flat,
    save_checkpoint,
)
from fercli.classes import IMAGE_SIZE
from fercli.crowd import training_targets
from fercli.device import needs_scaler, pick_device, precision_name, training_dtype, tune_for_training
from fercli.errors import INTERRUPTED, USAGE, FerError
from fercli.inference import normalize, predict_probs
from fercli.pace import EPOCH_OVERHEAD_S, Pace, format_duration, steps_in_budget
from fercli.plots import training_curves
from fercli.prepared import PreparedData, face_thumbnails
from fercli.progress import TrainProgress
from fercli.recipe import Recipe, lr_at
from fercli.resume import open_resume, restore
from fercli.runs import new_run_dir

METRIC_COLUMNS = ["epoch", "loss", "train_acc", "valid_loss", "valid_acc", "lr", "seconds", "images_per_s"]


@dataclass
class RunSettings:
    """How to run, as opposed to what to learn (the Recipe)."""

    data: str | None = None  # None: the run's own data when resuming, else fer-data.safetensors
    device: str = "auto"
    project: str = "runs"
    name: str = "exp"
    patience: int = 0  # stop after this many epochs without a better valid_acc (0 = never)
    json_lines: bool = False
    compile: bool = False
    log_every: int = 10  # at most one progress update (a CPU-GPU sync) per this many steps, when shown
    progress: bool = True
    stop_at_step: int | None = None  # act as if Ctrl-C came before this global step, or at once if past it
    save_every: int | None = None  # also save last every N steps; None: 0 (epoch ends only), or the resumed run's
    precision: str = "auto"  # training autocast: auto (measured on CPUs, bf16 on CUDA), fp32 or bf16


class _StopFlag:
    """SIGINT/SIGTERM set a flag that the loop checks between steps, so a step is never cut in half."""

    def __init__(self) -> None:
        self.hit = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.hit:  # a second Ctrl-C: the user really wants out
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only: never on BatchNorm parameters or biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, r: Recipe) -> torch.optim.Optimizer:
    groups = _param_groups(model, r.weight_decay)
    if r.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=True)
    if r.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=r.lr, betas=(r.momentum, 0.999))
    return torch.optim.Adam(groups, lr=r.lr)


def derived_seed(seed: int, epoch: int, step: int = -1) -> int:
    """A 63-bit seed for (run seed, epoch, step), well mixed (splitmix64), so nearby steps get unrelated
    random streams; step -1 seeds the epoch's permutation."""
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + (step + 1) * 0x94D049BB133111EB) % 2**64
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        z = ((z ^ (z >> shift)) * mult) % 2**64
    return (z ^ (z >> 31)) >> 1


def pixel_mean_std(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of uint8 pixels scaled to [0,1], from a 256-bin histogram (no float copy of the set)."""
    hist = np.bincount(images.reshape(-1), minlength=256).astype(np.float64)
    levels = np.arange(256) / 255.0
    mean = float(hist @ levels / hist.sum())
    var = float(hist @ (levels - mean) ** 2 / hist.sum())
    return mean, max(var**0.5, MIN_STD)


# Epoch-end saves of `last` wait until this many times their own duration has passed since the previous
# one (under 2% of the run): on this project's CPU a vgg4 `last` with EMA took ~0.6 s, a quarter of an
# epoch of a fast GPU run. curves.png is redrawn at most every CURVES_EVERY_S seconds. Both at the end.
LAST_COST_RATIO = 50
CURVES_EVERY_S = 30.0
# A --time run's schedule before its step count is fixed: so long that lr_at stays at its starting value.
UNPLANNED_STEPS = 10**12


def _time_left(pace: Pace, total_steps: int | None, global_step: int) -> float | None:
    if pace.seconds_per_step is None or total_steps is None:
        return None
    return (total_steps - global_step) * pace.seconds_per_step


def _write_args(run_dir: Path, recipe: Recipe, run: RunSettings, device: torch.device, world: int,
                amp_dtype: torch.dtype | None, total_steps: int | None) -> None:  # fmt: skip
    """args.json: how the run was asked for, and (once fixed) its step count."""
    args = {"recipe": recipe.to_dict(), "data": run.data, "device": str(device), "patience": run.patience,
            "processes": world, "precision": precision_name(amp_dtype),
            "total_steps": total_steps}  # fmt: skip
    with atomic_path(run_dir / "args.json") as tmp:
        tmp.write_text(json.dumps(args, indent=2) + "\n")


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(history)


def train(recipe: Recipe, run: RunSettings, resume: str | None = None) -> dict[str, Any]:
    """Train and return a summary (run folder, best valid_acc and its epoch, epochs run).

    Run by torchrun, this process is one rank of a DistributedDataParallel job."""
    group = distributed.from_env()
    if not group.main:
        console.reset(quiet=True)  # one voice: rank 0 talks, the other ranks only report errors
    try:
        summary = _train(recipe, run, resume, group)
        distributed.finish(group)  # not on errors: torchrun stops the other ranks then
        return summary
    finally:
        distributed.leave(group)


def _train(recipe: Recipe, run: RunSettings, resume: str | None, group: distributed.Group) -> dict[str, Any]:
    t_begin = time.perf_counter()  # a --time budget counts from here
    # ---- 1. run folder: a new one, or the one being resumed -----------------------------------------
    state: dict[str, Any] | None = None
    if resume is not None:
        ckpt, meta, recipe, state = open_resume(resume, run.project)
        run.patience = state.get("patience", run.patience)
        if run.save_every is None:
            run.save_every = state.get("save_every", 0)
        run_dir = ckpt.parent
        if group.main:
            clear_leftovers(run_dir)  # a killed writer's temporaries (rank 0 is the run's one writer)
        run.data = run.data or meta["data"]["path"]
        console.info(f"resuming {run_dir} at epoch {state['epoch']} step {state['step']}")
    if run.data is None:
        from fercli.prepared import DEFAULT_DATA

        console.default_used("--data", DEFAULT_DATA)
        run.data = DEFAULT_DATA
    run.save_every = run.save_every or 0
    if run.save_every < 0:
        raise FerError(f"--save-every must be 0 or more steps, got {run.save_every}", USAGE)
    device = distributed.join(group, pick_device(run.device))

    # ---- 2. data: the whole uint8 set moves to the device once ---------------------------------------
    data = PreparedData.open(run.data)
    if state is not None and data.content_hash != meta["data"]["hash"]:
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
    if state is not None:
        mean, std = meta["normalize"]["mean"], meta["normalize"]["std"]
    else:
        mean, std = pixel_mean_std(train_u8)
    seen = face_thumbnails(train_u8)  # saved with the weights: eval can spot a leaky split
    x_train = torch.from_numpy(train_u8).to(device)
    # int64 [N] class labels, or float32 [N,classes] vote shares (--labels probability)
    y_train = torch.from_numpy(np.ascontiguousarray(targets.train_y)).to(device)
    x_val_np, y_val = data.images[va], torch.from_numpy(targets.val_y)  # val: always class labels
    n = len(tr)
    batch = min(recipe.batch, n)
    if batch % group.world:
        raise FerError(f"--batch {batch} is not a multiple of the {group.world} torchrun processes", USAGE)
    local = batch // group.world  # this rank's slice of every global batch
    steps_per_epoch = n // batch  # the last partial batch is dropped; a new permutation covers it next epoch
    # With --time the step count is fixed once the first steps are timed (see pace.py); until then None.
    total_steps: int | None = None if recipe.time else steps_per_epoch * recipe.epochs

    def epochs_in(steps: int) -> int:  # epochs that `steps` steps touch (the last may be partial)
        return -(-steps // steps_per_epoch)

    if state is not None and state.get("total_steps"):
        total_steps = state["total_steps"]

    # ---- 3. network, optimizer, EMA, generator --------------------------------------------------------
    torch.manual_seed(recipe.seed)
    arch_args = {} if recipe.width is None else {"width": recipe.width}
    n_classes = len(targets.classes)
    model = models.create(recipe.arch, n_classes, **arch_args).to(device)
    # channels_last on every device: 1.46x on this project's CPU (vgg4s: 815 vs 559 images/s), and what
    # cuDNN's tensor-core kernels want.
    model = model.to(memory_format=torch.channels_last)
    amp_dtype = training_dtype(device, run.precision, lambda: models.create(recipe.arch, n_classes, **arch_args),
                               f"{recipe.arch}:{recipe.width}", local)  # fmt: skip
    torch.manual_seed(recipe.seed)  # the probe above may have drawn from the global generator
    tune_for_training(device)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler(amp_dtype))  # fp16 only
    opt = make_optimizer(model, recipe)
    ema = deepcopy(model).eval() if recipe.ema else None
    # Every random draw of a step (augmentation, dropout) is seeded from (seed, epoch, step), and each
    # epoch's permutation from (seed, epoch): no generator state is saved, so a run resumes exactly on
    # the same device type and correctly on another (a CPU run continued on a GPU).
    g = torch.Generator(device=device)
    ddp = distributed.wrap(model, group)  # averages gradients across ranks in backward
    step_fn = torch.compile(ddp) if run.compile else ddp

    epoch, start_step, global_step = 1, 0, 0
    sums = {"loss": 0.0, "correct": 0, "seen": 0}
    best_acc, best_epoch, bad_epochs, elapsed = -1.0, 0, 0, 0.0
    history: list[dict[str, Any]] = []
    perm: torch.Tensor | None = None
    if state is not None:
        perm = restore(ckpt, state, model, ema, opt, scaler, device, n)
        epoch, start_step, global_step = state["epoch"], state["step"], state["global_step"]
        sums, history, elapsed = state["sums"], state["history"], state["elapsed"]
        best_acc, best_epoch, bad_epochs = state["best_acc"], state["best_epoch"], state["bad_epochs"]
    else:
        run_dir = Path()
        if group.main:
            run_dir = new_run_dir(run.project, run.name)
            _write_args(run_dir, recipe, run, device, group.world, amp_dtype, total_steps)
        run_dir = Path(distributed.share_text(str(run_dir), group))
        console.info(f"run folder: {run_dir}")
    net = recipe.arch if recipe.width is None else f"{recipe.arch} (width {recipe.width})"
    length = f"{recipe.epochs} epochs" if not recipe.time else f"a {format_duration(recipe.time)} budget"
    precision = f"{precision_name(amp_dtype)} autocast" if amp_dtype is not None else "fp32"
    if scaler.is_enabled():
        precision += " with a gradient scaler"
    aim = "" if targets.mode == "fer2013" else f" (FER+ {targets.mode} targets, {n_classes} classes)"
    console.info(f"{net}, {n} train / {len(va)} val faces{aim}, batch {batch}, {length}, "
                 f"{recipe.optimizer} lr {recipe.lr}, {precision}")  # fmt: skip
    if group.active:
        console.info(f"torchrun: {group.world} processes, {local} faces each per step")

    def checkpoint_meta(row: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "arch": recipe.arch, "arch_args": arch_args, "classes": list(targets.classes), "image_size": IMAGE_SIZE,
            "normalize": {"mean": mean, "std": std}, "recipe": recipe.to_dict(),
            "data": {"path": str(run.data), "hash": data.content_hash}, "metrics": row,
            "best": {"valid_acc": best_acc, "epoch": best_epoch},
        }  # fmt: skip

    def save_last(row: dict[str, Any] | None, at_epoch: int, at_step: int, cur_perm: torch.Tensor | None) -> None:
        opt_tensors, opt_rest = optimizer_to_flat(opt)
        extra = dict(opt_tensors)
        if cur_perm is not None:
            extra["perm"] = cur_perm
        if ema is not None:
            extra.update({f"raw.{k}": v for k, v in model.state_dict().items()})
        meta = checkpoint_meta(row)
        meta["resume"] = {
            "epoch": at_epoch, "step": at_step, "global_step": global_step, "sums": sums, "history": history,
            "elapsed": elapsed, "best_acc": best_acc, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
            "optimizer": opt_rest, "patience": run.patience, "save_every": run.save_every,
            "total_steps": total_steps, "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        }  # fmt: skip
        save_checkpoint(run_dir / "last.safetensors", (ema or model).state_dict(), meta, extra, seen)

    # Running sums stay on the device between syncs; drain() moves them into `sums` (sync).
    loss_acc = torch.zeros((), device=device)
    correct_acc = torch.zeros((), device=device, dtype=torch.long)
    seen_since_sync = 0

    def drain() -> None:
        nonlocal seen_since_sync
        loss, correct, seen = distributed.sum_all([loss_acc.item(), correct_acc.item(), seen_since_sync], group)
        sums["loss"] += loss
        sums["correct"] += int(correct)
        sums["seen"] += int(seen)
        loss_acc.zero_()
        correct_acc.zero_()
        seen_since_sync = 0

    def plan() -> None:
        """Fix the step count of a --time run, and say when any run will take over an hour. Called once,
        when the first steps have been timed; under torchrun rank 0's figures are shared."""
        nonlocal total_steps
        sps = pace.seconds_per_step
        assert sps is not None
        k = min(len(va), 512)  # time a validation pass on a slice: epochs pay for it too
        t = time.perf_counter()
        predict_probs(model, np.ascontiguousarray(x_val_np[:k]), mean, std, device, batch=1024, tta=recipe.tta)
        model.train()
        epoch_extra = (time.perf_counter() - t) * len(va) / max(1, k) / group.world + EPOCH_OVERHEAD_S
        spent = elapsed + time.perf_counter() - t_begin
        if total_steps is None:
            assert recipe.time is not None
            total_steps = steps_in_budget(recipe.time, spent, global_step, sps, steps_per_epoch, epoch_extra)
            total_steps = int(distributed.share_text(str(total_steps), group))
            view.set_epochs(epochs_in(total_steps))
            console.info(f"--time {format_duration(recipe.time)}: {total_steps} steps "
                         f"({total_steps / steps_per_epoch:.1f} epochs at {sps * 1000:.0f} ms per step)")  # fmt: skip
            if group.main:
                _write_args(run_dir, recipe, run, device, group.world, amp_dtype, total_steps)
            return
        left = (total_steps - global_step) * sps + epochs_in(total_steps - global_step) * epoch_extra
        if spent + left > 3600:
            end = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + left))
            hint = " On a CPU, `--recipe cpu` or `--time 20m` gives a model sooner." if device.type == "cpu" else ""
            console.info(f"this run will take about {format_duration(spent + left)} (until about {end}).{hint}")

    # ---- 4. the epoch loop ---------------------------------------------------------------------------
    stopped_early = False
    saved_at = drawn_at = -float("inf")  # the first epoch saves and draws
    save_seconds = 0.0
    view_on = group.main and run.progress
    pace = Pace(first_step=global_step, steps_only=group.active)
    epochs_shown = 0 if total_steps is None else epochs_in(total_steps)  # 0: not known yet
    with _StopFlag() as stop, TrainProgress(epochs_shown, run.json_lines and group.main, view_on) as view:
        while total_steps is None or global_step < total_steps:
            t0 = time.perf_counter()
            if perm is None or start_step == 0:
                g.manual_seed(derived_seed(recipe.seed, epoch))
                perm = torch.randperm(n, generator=g, device=device)
                sums = {"loss": 0.0, "correct": 0, "seen": 0}
            seen_before = sums["seen"]  # images/s counts this session's images only (a resumed epoch)
            view.start_epoch(epoch, steps_per_epoch, start_step)
            step_at_epoch_start = global_step
            model.train()
            for step in range(start_step, steps_per_epoch):
                if total_steps is not None and global_step >= total_steps:
                    break  # a --time run ends inside its last epoch
                # Under torchrun, ranks agree on Ctrl-C every log_every-th step (a collective), so all stop
                # together; a single process checks every step.
                stop_now = (not group.active or step % run.log_every == 0) and distributed.any_rank(stop.hit, group)
                if stop_now or (run.stop_at_step is not None and global_step >= run.stop_at_step):
                    drain()
                    if group.main:
                        save_last(None, epoch, step, perm)
                    distributed.finish(group)  # every rank waits for that save, then all leave together
                    if not group.main:
                        raise FerError("", INTERRUPTED)  # rank 0 says it, once
                    launch = f"torchrun --nproc_per_node {group.world} -m fercli" if group.active else "fer"
                    raise FerError(
                        f"interrupted at epoch {epoch} step {step}; saved {run_dir / 'last.safetensors'}. "
                        f"Resume with: {launch} train --resume {run_dir}", INTERRUPTED,
                    )  # fmt: skip
                lo = step * batch + group.rank * local
                idx = perm[lo : lo + local]
                x = normalize(x_train[idx], mean, std)  # [B/world,1,48,48] float
                y = y_train[idx]  # [B/world]
                step_seed = derived_seed(recipe.seed, epoch, step)
                torch.manual_seed(step_seed)  # dropout
                if recipe.augments:
                    g.manual_seed(step_seed)
                    x = augment(x, recipe, g, group.rank, group.world)
                x = x.contiguous(memory_format=torch.channels_last)
                # Until a --time run's step count is fixed, its steps run at the schedule's starting rate.
                lr = lr_at(recipe, global_step, total_steps or UNPLANNED_STEPS)
                for param_group in opt.param_groups:
                    param_group["lr"] = lr
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    logits = step_fn(x)  # [B,classes]
                    # y: class indices [B], or vote shares [B,classes] (cross-entropy against a distribution)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()  # scale and unscale are no-ops unless fp16
                scaler.step(opt)
                scaler.update()
                if ema is not None:  # two fused kernels per step, not one per tensor
                    with torch.no_grad():
                        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - recipe.ema)
                        torch._foreach_copy_(list(ema.buffers()), list(model.buffers()))
                global_step += 1
                loss_acc += loss.detach() * len(y)
                correct_acc += (logits.argmax(1) == (y.argmax(1) if targets.soft else y)).sum()
                seen_since_sync += len(y)
                if pace.observe(global_step):
                    plan()
                # Progress is shown by time (a terminal: every second; a log: a line a minute), never more
                # often than every log_every steps; nothing shown, no sync.
                if (step + 1) % run.log_every == 0 and view.due():
                    drain()  # sync
                    ips = (sums["seen"] - seen_before) / max(1e-9, time.perf_counter() - t0)
                    view.step(step + 1, sums["loss"] / sums["seen"], sums["correct"] / sums["seen"], lr, ips,
                              _time_left(pace, total_steps, global_step))  # fmt: skip
                if run.save_every and global_step % run.save_every == 0 and step + 1 < steps_per_epoch:
                    drain()  # sync; the epoch-end save below covers the last step
                    if group.main:
                        save_last(None, epoch, step + 1, perm)
            start_step = 0
            drain()  # sync
            if pace.force(global_step, t0, step_at_epoch_start):
                plan()  # an epoch shorter than the timing needs

            # validation, with the EMA weights when EMA is on (sync: probabilities come back to the CPU);
            # each rank scores every world-th val face with rank 0's BatchNorm statistics, then all sum.
            t_val = time.perf_counter()
            distributed.same_buffers([m for m in (model, ema) if m is not None], group)
            shard = slice(group.rank, None, group.world)
            y_shard, correct, nll = y_val[shard], 0.0, 0.0
            if len(y_shard):
                x_shard = np.ascontiguousarray(x_val_np[shard])
                probs = predict_probs(ema or model, x_shard, mean, std, device, batch=1024, tta=recipe.tta)
                correct = float((probs.argmax(1) == y_shard).sum())
                nll = float(F.nll_loss(probs.clamp_min(1e-8).log(), y_shard, reduction="sum"))
            correct, nll = distributed.sum_all([correct, nll], group)
            valid_acc, valid_loss = correct / len(y_val), nll / len(y_val)
            seconds = time.perf_counter() - t0
            valid_seconds = time.perf_counter() - t_val
            elapsed += seconds
            row = {
                "epoch": epoch, "loss": sums["loss"] / max(1, sums["seen"]),
                "train_acc": sums["correct"] / max(1, sums["seen"]), "valid_loss": valid_loss,
                "valid_acc": valid_acc, "lr": lr_at(recipe, max(0, global_step - 1), total_steps or UNPLANNED_STEPS),
                "seconds": round(seconds, 3), "images_per_s": round((sums["seen"] - seen_before) / seconds, 1),
                "valid_seconds": round(valid_seconds, 3),
            }  # fmt: skip
            history.append(row)
            improved = valid_acc > best_acc
            if improved:
                best_acc, best_epoch, bad_epochs = valid_acc, epoch, 0
                if group.main:
                    save_checkpoint(run_dir / "best.safetensors", (ema or model).state_dict(), checkpoint_meta(row),
                                    train_faces=seen)  # fmt: skip
            else:
                bad_epochs += 1
            view.end_epoch(row, improved, global_step - (epoch - 1) * steps_per_epoch)
            epoch += 1
            perm = None
            stopping = bool(run.patience) and bad_epochs >= run.patience
            final = stopping or (total_steps is not None and global_step >= total_steps)
            if group.main:
                _write_metrics(run_dir / "metrics.csv", history)
                # `last` (weights, optimizer, EMA: 126 MB for vgg4) only as often as keeps its cost under
                # 1/LAST_COST_RATIO of the time, and at the end; Ctrl-C, SIGTERM and --save-every save too.
                now = time.perf_counter()
                if final or now - saved_at >= LAST_COST_RATIO * save_seconds:
                    save_last(row, epoch, 0, None)
                    saved_at = time.perf_counter()
                    save_seconds = saved_at - now
                if final or now - drawn_at >= CURVES_EVERY_S:
                    training_curves(history, run_dir / "curves.png", f"{recipe.arch} on {Path(run.data).name}")
                    drawn_at = now
            if stopping:
                console.info(f"early stop: no better valid_acc for {run.patience} epochs")
                stopped_early = True
                break

    console.info(
        f"best valid_acc {100 * best_acc:.2f}% at epoch {best_epoch}; weights in {run_dir / 'best.safetensors'}"
    )
    return {
        "run_dir": str(run_dir), "best_valid_acc": best_acc, "best_epoch": best_epoch,
        "epochs_run": len(history), "stopped_early": stopped_early, "seconds": elapsed,
        "history": history, "steps_per_epoch": steps_per_epoch,
    }  # fmt: skip
