"""fercli from Python: `load`, `prepare` and `train`, thin calls into the core the `fer` commands use
(docs/python.md). Nothing heavy is imported here: torch loads with the first call that needs it.

Errors are `fercli.FerError` (its `code` is the exit code `fer` would give), with the one-line message
the CLI prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fercli.defaults import PROJECT

if TYPE_CHECKING:
    from fercli.infer.model import FerModel


def load(model: str | os.PathLike | None = "builtin", device: str = "auto", tta: bool | str | None = None,
         project: str | os.PathLike = PROJECT, detector: str = "auto") -> FerModel:  # fmt: skip
    """A model ready to use: `builtin` (the model the package ships), a checkpoint (.safetensors), a run
    folder (its best checkpoint), or None for the newest run's best under `project`. `device`: auto
    (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps. `tta`: True (or "flip") averages over a
    horizontal flip, "crops" over the flip and four 1-pixel shifts of each (10 views), False (or "none")
    one view; None: as the model was validated in training. `detector`: how `faces` and `video` find faces: auto
    (CenterFace, or the Haar cascade where OpenCV cannot run it), centerface or haar."""
    from fercli.infer.model import FerModel

    return FerModel.load(model, device, tta, project, detector)


def prepare(sources: list[str | os.PathLike] | str | os.PathLike = (), out: str | os.PathLike = "fer-data.safetensors",
            **options: Any) -> dict[str, Any]:  # fmt: skip
    """`fer prep`: read FER2013 in any layout (CSV files, FER+ vote files, image folders or zips) into one
    prepared file at `out`; returns its metadata (counts per split, sources, content hash). Options as
    `fer prep`'s, in Python's spelling: val_frac, seed, skip_bad, synthetic, protocol, dedup, force."""
    from fercli.data.prep import prepare as run_prep

    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    return run_prep([os.fspath(s) for s in sources], os.fspath(out), **options)


def train(data: str | os.PathLike | None = None, recipe: str = "default", *, device: str = "auto",
          project: str | os.PathLike = PROJECT, name: str = "exp", resume: str | os.PathLike | None = None,
          progress: bool = True, **options: Any) -> Path:  # fmt: skip
    """`fer train`: train on a prepared file (default fer-data.safetensors) with a preset (default, study,
    cpu) or a recipe .json, the recipe's fields given as options on top (`time="5m"` for a wall-clock
    budget, epochs, arch, lr, batch, ..., augment=False). Returns the run folder, which holds
    best.safetensors (for `load`), last.safetensors, the metrics and the curves."""
    from fercli.engine.recipe import recipe_for
    from fercli.engine.setup import RunSettings
    from fercli.engine.train import train as run_training

    run_keys = ("patience", "json_lines", "compile", "save_every", "precision")
    settings = {k: options.pop(k) for k in run_keys if k in options}
    r = recipe_for(recipe, options, None if resume is None else os.fspath(resume))
    run = RunSettings(data=None if data is None else os.fspath(data), device=device, project=os.fspath(project),
                      name=name, progress=progress, **settings)  # fmt: skip
    summary = run_training(r, run, resume=None if resume is None else os.fspath(resume))
    return Path(summary["run_dir"])
