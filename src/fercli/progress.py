"""The live view of training on stderr: a rich bar per epoch on a terminal (refreshed every second),
one plain line a minute and one per epoch elsewhere, and (with --json) one JSON object per epoch on
stdout. The caller asks `due()` before it syncs the device to show anything."""

from __future__ import annotations

import json
import time
from typing import Any

from fercli import console

LIVE_EVERY_S = 1.0  # a terminal's bar: at most one refresh (one device sync) a second
PLAIN_EVERY_S = 60.0  # a log: a progress line at least once a minute during long epochs


class TrainProgress:
    def __init__(self, epochs: int, json_lines: bool = False, enabled: bool = True) -> None:
        self.epochs = epochs
        self.json_lines = json_lines
        self.enabled = enabled and not console.quiet()
        self.live = self.enabled and not console.plain()
        self._progress = None
        self._task = None
        self._epoch = 0
        self._steps = 0
        self._last = time.perf_counter()

    def __enter__(self) -> TrainProgress:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            # Laid out for an 80-column terminal: the bar gives way, the numbers never do.
            self._progress = Progress(
                TextColumn("{task.fields[epoch]}"),
                BarColumn(bar_width=None),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                console=console.stderr,
                transient=False,
                expand=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def set_epochs(self, epochs: int) -> None:
        """A --time run learns its epoch count once its first steps are timed."""
        self.epochs = epochs

    def due(self) -> bool:
        """Whether a progress update would be shown now (the caller then syncs to get its numbers)."""
        if not self.enabled:
            return False
        return time.perf_counter() - self._last >= (LIVE_EVERY_S if self.live else PLAIN_EVERY_S)

    def start_epoch(self, epoch: int, steps: int, done: int = 0) -> None:
        self._epoch, self._steps = epoch, steps
        if self._progress is not None:
            label = f"epoch {epoch}/{self.epochs or '?'}"  # 0: a --time run that has not fixed its length yet
            self._task = self._progress.add_task("", total=steps, completed=done, epoch=label, stats="")

    def step(self, done: int, loss: float, acc: float, lr: float, ips: float, left_s: float | None = None) -> None:
        self._last = time.perf_counter()
        left = f" {console.format_duration(left_s)} left" if left_s is not None else ""
        if self._progress is not None and self._task is not None:
            stats = f"loss {loss:.3f} acc {100 * acc:.1f}% {ips:,.0f}/s{left}"
            self._progress.update(self._task, completed=done, stats=stats)
        elif self.enabled:
            console.info(f"epoch {self._epoch}/{self.epochs or '?'} step {done}/{self._steps} loss {loss:.4f} "
                         f"train_acc {100 * acc:.2f}% lr {lr:.4g} {ips:,.0f} img/s{left}")  # fmt: skip

    def end_epoch(self, row: dict[str, Any], best: bool, done: int | None = None) -> None:
        """The epoch's numbers; `done` is how many of its steps ran (the last of a --time run may be short)."""
        self._last = time.perf_counter()
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self._steps if done is None else done)
            stats = (f"loss {row['loss']:.3f} acc {100 * row['train_acc']:.1f}% "
                     f"val {100 * row['valid_acc']:.2f}%{'*' if best else ''} {row['seconds']:.0f}s")  # fmt: skip
            self._progress.update(self._task, stats=stats)
        elif self.enabled:
            console.info(
                f"epoch {row['epoch']}/{self.epochs or '?'} loss {row['loss']:.4f} train_acc "
                f"{100 * row['train_acc']:.2f}% valid_acc {100 * row['valid_acc']:.2f}%{' *' if best else ''} "
                f"lr {row['lr']:.4g} {row['images_per_s']:,.0f} img/s {row['seconds']:.1f}s"
            )
        if self.json_lines:
            console.data_out(json.dumps(row))


class StepBar:
    """A bar for a long command's inner loop (`fer ascent`'s steps, `fer audit`'s batches) on a terminal;
    elsewhere silent. Use as a context manager; call `advance(n)` as work gets done."""

    def __init__(self, total: int, label: str, rate_unit: str | None = None) -> None:
        self.total, self.label, self.rate_unit = total, label, rate_unit  # rate_unit: show "N unit/s"
        self._progress = None
        self._task = None

    def __enter__(self) -> StepBar:
        if not console.plain():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.text import Text

            unit = self.rate_unit

            class Rate(ProgressColumn):  # task.speed is None until rich has two samples
                def render(self, task: Any) -> Text:
                    return Text(f"{task.speed or 0:6.1f} {unit}/s")

            rate = [Rate()] if unit else []
            self._progress = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), *rate,
                                      TimeRemainingColumn(), console=console.stderr, transient=True)  # fmt: skip
            self._progress.__enter__()
            self._task = self._progress.add_task("", total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
