"""Figures as PNG files (matplotlib's Agg backend, written atomically)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from fercli.errors import USAGE, FerError
from fercli.files.atomic import atomic_path


def check_png(path: str | os.PathLike) -> Path:
    """A figure's output name: figures are PNG, so another suffix (fig.jpg) is refused, not mislabelled."""
    if Path(path).suffix.lower() != ".png":
        raise FerError(f"{path}: figures are written as PNG; give the file a .png name", USAGE)
    return Path(path)


def _writable(folder: str) -> bool:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _quiet_config_dir() -> None:
    """Without a writable config and cache folder (a read-only HOME) matplotlib warns twice on stderr and
    uses a fresh temporary one; use a private folder of this user's in the temp dir instead, quietly."""
    if "MPLCONFIGDIR" in os.environ:
        return
    home = os.path.expanduser("~")
    config = os.path.join(os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"), "matplotlib")
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "matplotlib")
    if _writable(config) and _writable(cache):
        return
    mine = os.path.join(tempfile.gettempdir(), f"fercli-matplotlib-{os.getuid() if hasattr(os, 'getuid') else 0}")
    try:
        os.makedirs(mine, mode=0o700, exist_ok=True)
        ok = os.stat(mine).st_uid == os.getuid() and os.access(mine, os.W_OK)  # not a folder another user made
    except (OSError, AttributeError):
        ok = False
    os.environ["MPLCONFIGDIR"] = mine if ok else tempfile.mkdtemp(prefix="fercli-matplotlib-")


def pyplot():
    _quiet_config_dir()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110, source: str | None = None) -> None:
    """Write `fig` as PNG; `source` (which faces it shows: "the test split of fer-data.safetensors") goes
    into the file's Description text, so the figure says where it came from outside its title too."""
    plt = pyplot()
    check_png(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight",
                    metadata={"Description": source} if source else None)  # fmt: skip
    plt.close(fig)


def split_source(split: str, data_path: str | os.PathLike) -> str:
    """What a figure of a split shows, in words: "the test split of fer-data.safetensors"."""
    return f"the {split} split of {Path(str(data_path)).name}"


def training_curves(history: list[dict[str, float]], path: str | os.PathLike, title: str = "") -> None:
    """The study's figure: loss on the left, train_acc and valid_acc on the right, per epoch."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [h["loss"] for h in history], "o-", ms=3, label="train loss")
    if all("valid_loss" in h for h in history):
        ax_loss.plot(epochs, [h["valid_loss"] for h in history], "o-", ms=3, label="valid loss")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * h["train_acc"] for h in history], "o-", ms=3, label="train_acc")
    ax_acc.plot(epochs, [100 * h["valid_acc"] for h in history], "o-", ms=3, label="valid_acc")
    best = max(history, key=lambda h: h["valid_acc"])
    ax_acc.axhline(100 * best["valid_acc"], color="gray", lw=0.8, ls="--")
    ax_acc.plot([best["epoch"]], [100 * best["valid_acc"]], "*", color="gray", ms=10)
    # The best epoch is named in the legend, not written over the lines.
    ax_acc.plot([], [], "*", color="gray", label=f"best {100 * best['valid_acc']:.1f}% (epoch {best['epoch']})")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_acc.legend(loc="lower right")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
