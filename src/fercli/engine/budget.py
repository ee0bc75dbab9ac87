"""How long a run is: its step count, and for a `--time` run, how that count follows the clock.

An epoch-count run knows its steps from the start. A `--time` run first times its opening steps (pace.py)
and fixes a step count that fits the budget, then re-plans at every epoch's end from the pace of the
epoch just run and the time validation and saving took. A run whose first minute shares the machine
with other work therefore trains more once the machine frees up, and one that slows down ends on time
all the same. The count changes only at epoch ends, before `last` is saved, so a resumed run follows the
schedule the interrupted one had (the learning rate is a function of the step and that count).

Measured on this project's 2-core Xeon without bf16 (2026-12-01): a 5-minute `cpu` recipe run whose
count was fixed from its first steps (178 ms each) ran its epochs at 113-126 ms per step and stopped
after 195 of its 300 seconds.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fercli import console
from fercli.engine import distributed
from fercli.engine.pace import EPOCH_OVERHEAD_S, MIN_TIMED_STEPS, Pace, steps_in_budget
from fercli.engine.setup import Setup
from fercli.engine.state import TrainState
from fercli.infer.inference import predict_probs
from fercli.progress import TrainProgress


class Budget:
    """The run's length while it runs. The loop calls it at four points: after each step, after an
    epoch's steps (the meters drained), after validation, and for the time left to show."""

    def __init__(self, s: Setup, st: TrainState, view: TrainProgress, t_begin: float) -> None:
        self.s, self.st, self.view = s, st, view
        self.t_begin = t_begin  # when this process began: set-up counts against the budget
        self.spent_before = st.elapsed  # seconds earlier sessions of a resumed run spent
        sync = torch.cuda.synchronize if s.device.type == "cuda" else None
        self.pace = Pace(first_step=st.global_step, steps_only=s.group.active, sync=sync)
        self.save_seconds = EPOCH_OVERHEAD_S  # per epoch: checkpoints, metrics.csv, curves; then measured
        self.t_epoch = self.t_trained = t_begin
        self.epoch_first_step = st.global_step

    @property
    def spent(self) -> float:
        return self.spent_before + time.perf_counter() - self.t_begin

    def epoch_started(self) -> None:
        self.t_epoch, self.epoch_first_step = time.perf_counter(), self.st.global_step

    def after_step(self) -> None:
        if self.pace.observe(self.st.global_step):
            self._first_plan()

    def epoch_trained(self) -> None:
        """The epoch's steps are done (meters drained: a sync, so the time is the GPU's too)."""
        self.t_trained = time.perf_counter()
        if self.pace.force(self.st.global_step, self.t_epoch, self.epoch_first_step):
            self._first_plan()  # an epoch shorter than the timing needs

    def epoch_validated(self, valid_seconds: float) -> None:
        """Re-plan a --time run from this epoch: its seconds per step, validation and the last save's cost."""
        s, st = self.s, self.st
        steps = st.global_step - self.epoch_first_step
        # The last planned epoch re-plans too: a run that sped up finds the time for more epochs there.
        if not s.recipe.time or st.total_steps is None or steps < MIN_TIMED_STEPS:
            return
        sps = (self.t_trained - self.t_epoch) / steps
        extra = valid_seconds + self.save_seconds
        total = steps_in_budget(s.recipe.time, self.spent, st.global_step, sps, s.steps_per_epoch, extra)
        if total - st.global_step < s.steps_per_epoch // 2:
            total = st.global_step  # not half an epoch left: end here rather than pay a validation for a few steps
        total = int(distributed.share_text(str(total), s.group))  # rank 0's clock decides for all
        self.pace.seconds_per_step = sps  # the time left shown follows the latest pace
        if total != st.total_steps:
            st.total_steps = total
            self.view.set_epochs(s.epochs_in(total))
            if s.group.main:
                s.write_args(total)

    def saved(self, seconds: float) -> None:
        """How long the epoch's end took (checkpoints, curves): the next re-plan pays for it."""
        self.save_seconds = max(seconds, 0.05)

    def time_left(self) -> float | None:
        sps, total = self.pace.seconds_per_step, self.st.total_steps
        return None if sps is None or total is None else (total - self.st.global_step) * sps

    def _first_plan(self) -> None:
        """Fix the step count of a --time run from its first timed steps, and say when any run will take
        over an hour. Under torchrun rank 0's figures are shared."""
        s, st = self.s, self.st
        sps = self.pace.seconds_per_step
        assert sps is not None
        k = min(len(s.y_val), 512)  # time a validation pass on a slice: epochs pay for it too
        t = time.perf_counter()
        predict_probs(s.model, np.ascontiguousarray(s.x_val[:k]), s.mean, s.std, s.device, batch=1024,
                      tta=s.recipe.tta)  # fmt: skip
        s.model.train()
        epoch_extra = (time.perf_counter() - t) * len(s.y_val) / max(1, k) / s.group.world + EPOCH_OVERHEAD_S
        if st.total_steps is None:
            assert s.recipe.time is not None
            total = steps_in_budget(s.recipe.time, self.spent, st.global_step, sps, s.steps_per_epoch, epoch_extra)
            st.total_steps = int(distributed.share_text(str(total), s.group))
            self.view.set_epochs(s.epochs_in(st.total_steps))
            console.info(f"--time {console.format_duration(s.recipe.time)}: {st.total_steps} steps "
                         f"({st.total_steps / s.steps_per_epoch:.1f} epochs at {sps * 1000:.0f} ms per step; "
                         "re-planned at each epoch's end)")  # fmt: skip
            if s.group.main:
                s.write_args(st.total_steps)
            return
        left = (st.total_steps - st.global_step) * sps + s.epochs_in(st.total_steps - st.global_step) * epoch_extra
        if self.spent + left > 3600:
            end = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + left))
            hint = " On a CPU, `--recipe cpu` or `--time 20m` gives a model sooner." if s.device.type == "cpu" else ""
            console.info(f"this run will take about {console.format_duration(self.spent + left)} "
                         f"(until about {end}).{hint}")  # fmt: skip
