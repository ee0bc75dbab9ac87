"""How long training takes: durations as users write them, the timing of steps, and the step count that
fits a wall-clock budget (`fer train --time 20m`).

A budgeted run times its first steps and sets its total step count from them, so that the learning
rate's warm-up and decay end on time; budget.py then re-plans that count at each epoch's end. Until the
count is first set the steps run at the schedule's starting rate.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from fercli.errors import USAGE, FerError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
# Steps not timed (the first calls build oneDNN/cuDNN kernels), and how much timing is enough.
WARM_STEPS = 3
MIN_TIMED_STEPS = 10
MIN_TIMED_SECONDS = 3.0
# Per epoch, on top of validation: writing last/best checkpoints, metrics.csv and curves.png.
EPOCH_OVERHEAD_S = 0.7


def parse_duration(text: str) -> float:
    """'20m', '90s', '1.5h', '1h30m' or plain seconds ('600') -> seconds."""
    s = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", s):
        seconds = float(s)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", s)
        if not parts or "".join(a + u for a, u in parts) != s:
            raise FerError(f"--time '{text}' is not a duration (examples: 90s, 20m, 1.5h, 1h30m)", USAGE)
        seconds = sum(float(a) * _UNITS[u] for a, u in parts)
    if not 1 <= seconds <= 30 * 86400:
        raise FerError(f"--time '{text}' must be between 1 second and 30 days", USAGE)
    return seconds


@dataclass
class Pace:
    """Seconds per training step, measured over the steps after the first WARM_STEPS of this process."""

    first_step: int  # the global step this process started at (not 0 after a resume)
    steps_only: bool = False  # decide by step count alone (torchrun: every rank must decide at the same step)
    # Waits for the device (torch.cuda.synchronize on CUDA): its kernels run behind the Python loop, so
    # without it the clock would time how fast steps are queued. Called only while the timing lasts.
    sync: Callable[[], None] | None = None
    t_mark: float | None = None
    step_mark: int = 0
    seconds_per_step: float | None = None

    def observe(self, global_step: int, now: float | None = None) -> bool:
        """Call after each step; True once, at the step where the measurement becomes available."""
        if self.seconds_per_step is not None:
            return False
        if self.sync is not None and global_step - self.first_step >= WARM_STEPS:
            self.sync()  # sync, for the first seconds of a run only
        now = time.perf_counter() if now is None else now
        done = global_step - self.first_step
        if done == WARM_STEPS:
            self.t_mark, self.step_mark = now, global_step
        elif self.t_mark is not None:
            timed, spent = global_step - self.step_mark, now - self.t_mark
            if timed >= MIN_TIMED_STEPS and (spent >= MIN_TIMED_SECONDS or self.steps_only):
                self.seconds_per_step = spent / timed
                return True
        return False

    def force(self, global_step: int, t_epoch: float, epoch_first_step: int, now: float | None = None) -> bool:
        """At an epoch's end before enough steps were timed: measure with what there is (the steps after
        the warm-up ones, else the whole epoch's)."""
        if self.seconds_per_step is not None:
            return False
        now = time.perf_counter() if now is None else now
        if self.t_mark is not None and global_step > self.step_mark:
            self.seconds_per_step = (now - self.t_mark) / (global_step - self.step_mark)
        else:
            self.seconds_per_step = (now - t_epoch) / max(1, global_step - epoch_first_step)
        return True


def steps_in_budget(budget_s: float, spent_s: float, done_steps: int, seconds_per_step: float,
                    steps_per_epoch: int, epoch_extra_s: float) -> int:  # fmt: skip
    """The total step count that ends training when `budget_s` seconds have passed since the run began.

    Each epoch costs its steps plus `epoch_extra_s` (validation, checkpoints); the final validation and
    save are paid for too. A last epoch shorter than half an epoch is dropped. At least one step more
    than done."""
    left = budget_s - spent_s - epoch_extra_s
    per_step = seconds_per_step + epoch_extra_s / steps_per_epoch
    total = done_steps + max(1, int(left / per_step))
    if total > steps_per_epoch and total % steps_per_epoch < steps_per_epoch // 2:
        # A last epoch of a few steps would pay a whole validation for them: end at the epoch before.
        total = max(done_steps + 1, total - total % steps_per_epoch)
    return total
