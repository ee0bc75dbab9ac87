"""The live view of training on stderr: a rich bar per epoch on a terminal, one plain line per epoch
elsewhere, and (with --json) one JSON object per epoch on stdout."""

from __future__ import annotations

import json
from typing import Any

from fercli import console


class TrainProgress:
    def __init__(self, epochs: int, json_lines: bool = False, enabled: bool = True) -> None:
        self.epochs = epochs
        self.json_lines = json_lines
        self.enabled = enabled and not console.quiet()
        self.live = self.enabled and not console.plain()
        self._progress = None
        self._task = None

    def __enter__(self) -> TrainProgress:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
                console=console.stderr,
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int, steps: int, done: int = 0) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task(
                "", total=steps, completed=done, epoch=epoch, epochs=self.epochs, stats=""
            )

    def step(self, done: int, loss: float, acc: float, lr: float, ips: float) -> None:
        if self._progress is not None and self._task is not None:
            stats = f"loss {loss:.4f} train_acc {100 * acc:.2f}% lr {lr:.4g} {ips:,.0f} img/s"
            self._progress.update(self._task, completed=done, stats=stats)

    def end_epoch(self, row: dict[str, Any], best: bool) -> None:
        text = (
            f"loss {row['loss']:.4f} train_acc {100 * row['train_acc']:.2f}% "
            f"valid_acc {100 * row['valid_acc']:.2f}%{' *' if best else ''} lr {row['lr']:.4g} "
            f"{row['images_per_s']:,.0f} img/s {row['seconds']:.1f}s"
        )
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, stats=text)
        elif self.enabled:
            console.info(f"epoch {row['epoch']}/{self.epochs} {text}")
        if self.json_lines:
            console.data_out(json.dumps(row))
