"""The training loop, as phases that read top-down in `_train`:

  set_up       (setup.py) run folder, the whole uint8 train set on the device, network, optimizer, EMA
  train_epoch  per step: index a batch, normalise, augment on the device, forward, backward, step, EMA
  validate     the EMA (else the raw) weights on the val split
  end_epoch    best.safetensors and metrics.csv; last.safetensors and curves.png on their cadences

CPU-GPU sync points are marked "sync": the loop reads numbers back only to show, save or decide.
Under torchrun (distributed.py) every rank runs this same sequence on its own slice of each global batch;
the permutation, augmentation draws and decisions (best epoch, early stop, Ctrl-C) are identical on all
ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import csv
import os
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F

from fercli import console
from fercli.engine import distributed
from fercli.engine.augment import alternating, augment
from fercli.engine.budget import Budget
from fercli.engine.device import check_probe
from fercli.engine.recipe import Recipe, lr_at
from fercli.engine.setup import RunSettings, Setup, lr_scales, probe_key, set_up
from fercli.engine.state import TrainState
from fercli.errors import INTERRUPTED, FerError, Stopped
from fercli.files.atomic import atomic_path
from fercli.files.checkpoint import save_checkpoint
from fercli.infer.inference import normalize, predict_probs
from fercli.plots import training_curves
from fercli.progress import TrainProgress

__all__ = ["RunSettings", "derived_seed", "train"]

METRIC_COLUMNS = ["epoch", "loss", "train_acc", "valid_loss", "valid_acc", "lr", "seconds", "images_per_s"]
# Epoch-end saves of `last` wait until this many times their own duration has passed since the previous
# one (under 2% of the run): on this project's CPU a vgg4 `last` with EMA took ~0.6 s, a quarter of an
# epoch of a fast GPU run. curves.png is redrawn at most every CURVES_EVERY_S seconds. Both at the end.
LAST_COST_RATIO = 50
CURVES_EVERY_S = 30.0
# A --time run's schedule before its step count is fixed: so long that lr_at stays at its starting value.
UNPLANNED_STEPS = 10**12


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
    s, st, perm = set_up(recipe, run, resume, group)
    meter = _Meter(s.device, s.targets.soft)
    cadence = _Cadence()
    epochs_shown = 0 if st.total_steps is None else s.epochs_in(st.total_steps)  # 0: not known yet
    stopped_early = False
    stuck_exit_s = STUCK_EXIT_S if group.active else None
    with _StopFlag(stuck_exit_s) as stop, TrainProgress(epochs_shown, run.json_lines and group.main,
                                                        group.main and run.progress) as view:  # fmt: skip
        epochs_before = len(st.history)
        budget = Budget(s, st, view, t_begin)  # the step count, and how a --time run's follows the clock
        while st.total_steps is None or st.global_step < st.total_steps:
            budget.epoch_started()
            if perm is None or st.step == 0:
                s.generator.manual_seed(derived_seed(s.recipe.seed, st.epoch))
                perm = torch.randperm(len(s.x_train), generator=s.generator, device=s.device)  # int64 [N]
                st.new_epoch_sums()
            meter.seen_at_start = st.sums["seen"]  # images/s counts this session's images (a resumed epoch)
            view.start_epoch(st.epoch, s.steps_per_epoch, st.step)
            train_epoch(s, st, perm, meter, stop, view, budget)
            meter.drain(st.sums, group)  # sync
            budget.epoch_trained()
            if not st.history[epochs_before:] and s.device.type == "cpu" and s.run.precision == "auto" and group.main:
                # The first epoch of this process against the precision probe's cached figure (sync-free: CPU)
                trained = (st.sums["seen"] - meter.seen_at_start) / max(1e-9, budget.t_trained - budget.t_epoch)
                check_probe(probe_key(s.recipe), s.local, trained / group.world)
            valid_acc, valid_loss, valid_seconds = validate(s)
            budget.epoch_validated(valid_seconds)  # a --time run re-plans, before `last` saves the count
            seconds = time.perf_counter() - budget.t_epoch
            st.elapsed += seconds
            lr = lr_at(s.recipe, max(0, st.global_step - 1), st.total_steps or UNPLANNED_STEPS)
            row = {
                "epoch": st.epoch, "loss": st.sums["loss"] / max(1, st.sums["seen"]),
                "train_acc": st.sums["correct"] / max(1, st.sums["seen"]), "valid_loss": valid_loss,
                "valid_acc": valid_acc, "lr": lr, "seconds": round(seconds, 3),
                "images_per_s": round((st.sums["seen"] - meter.seen_at_start) / seconds, 1),
                "valid_seconds": round(valid_seconds, 3),
            }  # fmt: skip
            steps_done = st.step  # of this epoch, before end_epoch moves the state to the next one
            t_end = time.perf_counter()
            improved = end_epoch(s, st, row, cadence)
            budget.saved(time.perf_counter() - t_end)
            view.end_epoch(row, improved, steps_done)
            perm = None
            if s.run.patience and st.bad_epochs >= s.run.patience:
                console.info(f"early stop: no better valid_acc for {s.run.patience} epochs")
                stopped_early = True
                break

    console.info(f"best valid_acc {100 * st.best_acc:.2f}% at epoch {st.best_epoch}; "
                 f"weights in {s.run_dir / 'best.safetensors'}")  # fmt: skip
    return {
        "run_dir": str(s.run_dir), "best_valid_acc": st.best_acc, "best_epoch": st.best_epoch,
        "epochs_run": len(st.history), "stopped_early": stopped_early, "seconds": st.elapsed,
        "history": st.history, "steps_per_epoch": s.steps_per_epoch,
    }  # fmt: skip


def train_epoch(s: Setup, st: TrainState, perm: torch.Tensor, meter: _Meter, stop: _StopFlag,
                view: TrainProgress, budget: Budget) -> None:  # fmt: skip
    """The steps of one epoch from st.step, or up to a --time run's last step."""
    r, run, group, g = s.recipe, s.run, s.group, s.generator
    s.model.train()
    ema_params, model_params = _pairs(s)
    for step in range(st.step, s.steps_per_epoch):
        if st.total_steps is not None and st.global_step >= st.total_steps:
            break  # a --time run ends inside its last epoch
        st.step = step
        # Under torchrun, ranks agree on Ctrl-C every log_every-th step (a collective), so all stop
        # together; a single process checks every step.
        stop_now = (not group.active or step % run.log_every == 0) and distributed.any_rank(stop.hit, group)
        if stop_now or (run.stop_at_step is not None and st.global_step >= run.stop_at_step):
            _interrupt(s, st, perm, meter)
        lo = step * s.batch + group.rank * s.local
        idx = perm[lo : lo + s.local]
        x = normalize(s.x_train[idx], s.mean, s.std)  # [B/world,1,48,48] float
        y = s.y_train[idx]  # [B/world] class indices, or [B/world,classes] vote shares
        step_seed = derived_seed(r.seed, st.epoch, step)
        torch.manual_seed(dropout_seed(step_seed, group.rank))
        if r.augments:
            g.manual_seed(step_seed)
            flips = None if s.flip_first is None else alternating(s.flip_first[idx], st.epoch)
            x = augment(x, r, g, group.rank, group.world, flips)
        x = x.contiguous(memory_format=torch.channels_last)
        # Until a --time run's step count is fixed, its steps run at the schedule's starting rate.
        lr = lr_at(r, st.global_step, st.total_steps or UNPLANNED_STEPS)
        for param_group, scale in zip(s.opt.param_groups, lr_scales(r), strict=True):
            param_group["lr"] = lr * scale
        # fp32 enters no autocast at all: torch before 2.5 refuses even a disabled one on MPS
        amp = torch.autocast(s.device.type, dtype=s.amp_dtype) if s.amp_dtype is not None else nullcontext()
        with amp:
            logits = s.step_fn(x)  # [B/world,classes]
            # against class indices, or against a distribution (FER+ probability targets)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=r.label_smoothing)
        s.opt.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()  # scale and unscale are no-ops unless fp16
        s.scaler.step(s.opt)
        s.scaler.update()
        if s.ema is not None:  # two fused kernels per step, not one per tensor
            with torch.no_grad():
                torch._foreach_lerp_(ema_params[0], model_params[0], 1 - r.ema)
                torch._foreach_copy_(ema_params[1], model_params[1])
        st.global_step += 1
        if s.lookahead is not None:
            s.lookahead.after_step(st.global_step, st.total_steps or UNPLANNED_STEPS)
        st.step = step + 1
        meter.add(loss, logits, y)
        budget.after_step()
        # Progress is shown by time (a terminal: every second; a log: a line a minute), never more often
        # than every log_every steps; nothing shown, no sync. Only rank 0 has a view, and the drain is a
        # collective: under torchrun every rank learns rank 0's answer first (a collective of its own),
        # or rank 0 alone would enter the drain and pair it with the others' next collective (a hang).
        if (step + 1) % run.log_every == 0 and distributed.any_rank(view.due(), group):
            meter.drain(st.sums, group)  # sync
            n = st.sums["seen"]
            ips = (n - meter.seen_at_start) / max(1e-9, time.perf_counter() - budget.t_epoch)
            view.step(step + 1, st.sums["loss"] / n, st.sums["correct"] / n, lr, ips, budget.time_left())
        if run.save_every and st.global_step % run.save_every == 0 and step + 1 < s.steps_per_epoch:
            meter.drain(st.sums, group)  # sync; the epoch-end save covers an epoch's last step
            if group.main:
                s.save_last(st, None, perm)


def validate(s: Setup) -> tuple[float, float, float]:
    """(valid_acc, valid_loss, seconds) of the EMA weights when EMA is on (sync: probabilities come back
    to the CPU). Each rank scores every world-th val face with rank 0's BatchNorm statistics; all sum."""
    t = time.perf_counter()
    group = s.group
    distributed.same_buffers([m for m in (s.model, s.ema) if m is not None], group)
    shard = slice(group.rank, None, group.world)
    y_shard, correct, nll = s.y_val[shard], 0.0, 0.0
    if len(y_shard):
        x_shard = np.ascontiguousarray(s.x_val[shard])
        probs = predict_probs(s.ema or s.model, x_shard, s.mean, s.std, s.device, batch=1024, tta=s.recipe.tta)
        correct = float((probs.argmax(1) == y_shard).sum())
        nll = float(F.nll_loss(probs.clamp_min(1e-8).log(), y_shard, reduction="sum"))
    correct, nll = distributed.sum_all([correct, nll], group)
    return correct / len(s.y_val), nll / len(s.y_val), time.perf_counter() - t


def end_epoch(s: Setup, st: TrainState, row: dict[str, Any], cadence: _Cadence) -> bool:
    """Record the epoch, keep the best weights, move the state to the next epoch and write the run
    folder's files; True when this epoch is the best so far."""
    st.history.append(row)
    improved = row["valid_acc"] > st.best_acc
    if improved:
        st.best_acc, st.best_epoch, st.bad_epochs = row["valid_acc"], st.epoch, 0
        if s.group.main:
            save_checkpoint(s.run_dir / "best.safetensors", (s.ema or s.model).state_dict(), s.meta(st, row),
                            train_faces=s.train_faces)  # fmt: skip
    else:
        st.bad_epochs += 1
    st.epoch, st.step = st.epoch + 1, 0
    if not s.group.main:
        return improved
    final = bool(s.run.patience) and st.bad_epochs >= s.run.patience
    final = final or (st.total_steps is not None and st.global_step >= st.total_steps)
    _write_metrics(s.run_dir / "metrics.csv", st.history)
    # `last` (weights, optimizer, EMA: 126 MB for vgg4) only as often as keeps its cost under
    # 1/LAST_COST_RATIO of the time, and at the end; Ctrl-C, SIGTERM and --save-every save too.
    now = time.perf_counter()
    if final or now - cadence.saved_at >= LAST_COST_RATIO * cadence.save_seconds:
        s.save_last(st, row, None)
        cadence.saved_at = time.perf_counter()
        cadence.save_seconds = cadence.saved_at - now
    if final or now - cadence.drawn_at >= CURVES_EVERY_S:
        training_curves(st.history, s.run_dir / "curves.png", f"{s.recipe.arch} on {Path(str(s.run.data)).name}")
        cadence.drawn_at = now
    return improved


def dropout_seed(step_seed: int, rank: int) -> int:
    """The seed of a rank's dropout masks at a step. Each rank's slice holds other faces, so each draws
    its own masks (one stream for all would tie the ranks' masks together); rank 0 keeps the step's
    seed, so a one-process run draws what it always drew. Augmentation is not seeded here: it is drawn
    for the whole global batch on every rank (augment.py)."""
    return step_seed if rank == 0 else derived_seed(step_seed, rank, -2)


def derived_seed(seed: int, epoch: int, step: int = -1) -> int:
    """A 63-bit seed for (run seed, epoch, step), well mixed (splitmix64), so nearby steps get unrelated
    random streams; step -1 seeds the epoch's permutation. No generator state is saved: a run resumes
    exactly on the same device type and correctly on another (a CPU run continued on a GPU)."""
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + (step + 1) * 0x94D049BB133111EB) % 2**64
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        z = ((z ^ (z >> shift)) * mult) % 2**64
    return (z ^ (z >> 31)) >> 1


# ---- helpers of the phases ---------------------------------------------------------------------------


class _Meter:
    """Train loss and correct counts, summed on the device between syncs: reading them back (.item()) is
    a CPU-GPU sync, done only when progress is shown, a checkpoint saved or an epoch ends."""

    def __init__(self, device: torch.device, soft: bool) -> None:
        self.soft = soft  # targets are vote shares [B,classes]: a prediction is correct on their majority
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.pending = 0  # faces added since the last drain
        self.seen_at_start = 0  # st.sums["seen"] when this session's epoch began (images/s)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        labels = y.argmax(1) if self.soft else y
        self.loss += loss.detach() * len(y)
        self.correct += (logits.argmax(1) == labels).sum()
        self.pending += len(y)

    def drain(self, sums: dict[str, Any], group: distributed.Group) -> None:
        """Move the device sums into `sums`, summed over ranks (sync)."""
        loss, correct, seen = distributed.sum_all([self.loss.item(), self.correct.item(), self.pending], group)
        sums["loss"] += loss
        sums["correct"] += int(correct)
        sums["seen"] += int(seen)
        self.loss.zero_()
        self.correct.zero_()
        self.pending = 0


@dataclass
class _Cadence:
    """When last.safetensors was saved (and how long that took) and curves.png drawn: the first epoch does both."""

    saved_at: float = -float("inf")
    save_seconds: float = 0.0
    drawn_at: float = -float("inf")


# Under torchrun, a rank stuck in a collective (another rank died, or never joined it) runs no Python, so
# the flag below is never read; a watcher thread, woken by the signal itself (signal.set_wakeup_fd),
# ends the process this long after SIGINT/SIGTERM if it has not ended by then. The normal way out (the
# ranks agree, rank 0 saves `last`, all leave) takes a few steps and a save.
STUCK_EXIT_S = 30.0


class _StopFlag:
    """SIGINT/SIGTERM set a flag that the loop checks between steps, so a step is never cut in half.
    With `stuck_exit_s`, a watcher thread ends the process that long after the signal if the loop never
    got to act on it."""

    def __init__(self, stuck_exit_s: float | None = None) -> None:
        self.hit = False
        self._old: dict[int, Any] = {}
        self._stuck_exit_s = stuck_exit_s
        self._pipe: tuple[int, int] | None = None
        self._old_fd: int | None = None
        self._done = threading.Event()

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        if self._stuck_exit_s is not None and self._old:
            r, w = os.pipe()
            os.set_blocking(w, False)
            self._pipe = (r, w)
            self._old_fd = signal.set_wakeup_fd(w)
            threading.Thread(target=self._watch, args=(r,), daemon=True, name="fer-stop-watch").start()
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.hit:  # a second Ctrl-C: the user really wants out
            raise Stopped("interrupted", INTERRUPTED)
        self.hit = True

    def _watch(self, r: int) -> None:
        """Runs while Python's main thread may be blocked: woken by each signal's byte on the pipe."""
        while not self._done.is_set():
            try:
                got = os.read(r, 64)
            except OSError:
                return
            if not got or self._done.is_set():
                return
            if signal.SIGINT in got or signal.SIGTERM in got:
                if not self._done.wait(self._stuck_exit_s):
                    os.write(2, b"error: interrupted, but this process is stuck waiting for the other torchrun "
                                b"processes (one may have died); leaving without saving\n")  # fmt: skip
                    os._exit(INTERRUPTED)
                return

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_fd if self._old_fd is not None else -1)
            os.write(self._pipe[1], b"\0")  # wake the watcher so it sees it is done
            for fd in self._pipe:
                os.close(fd)
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _pairs(s: Setup) -> tuple[tuple[list, list], tuple[list, list]]:
    """((EMA parameters, EMA buffers), (model parameters, model buffers)) for the foreach EMA update."""
    if s.ema is None:
        return ([], []), ([], [])
    return (list(s.ema.parameters()), list(s.ema.buffers())), (list(s.model.parameters()), list(s.model.buffers()))


def _interrupt(s: Setup, st: TrainState, perm: torch.Tensor, meter: _Meter) -> NoReturn:
    """Ctrl-C, SIGTERM or --stop-at-step: save `last` at this step on rank 0, then leave together."""
    meter.drain(st.sums, s.group)  # sync
    if s.group.main:
        s.save_last(st, None, perm)
    distributed.finish(s.group)  # every rank waits for that save, then all leave together
    if not s.group.main:
        raise FerError("", INTERRUPTED)  # rank 0 says it, once
    launch = f"torchrun --nproc_per_node {s.group.world} -m fercli" if s.group.active else "fer"
    raise FerError(f"interrupted at epoch {st.epoch} step {st.step}; saved {s.run_dir / 'last.safetensors'}. "
                   f"Resume with: {launch} train --resume {s.run_dir}", INTERRUPTED)  # fmt: skip


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(history)
