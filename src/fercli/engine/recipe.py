"""Training hyperparameters, all in one place, with their units.

Presets: `default` (vgg4, 110 epochs, for a GPU), `study` (the original study's vgg5 recipe) and `cpu`
(a 19-minute budget). Every accuracy figure the project publishes for them is its own measurement, with
its command, in docs/recipes.md; figures from outside the project are marked there as references.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from fercli.classes import LABEL_MODES
from fercli.errors import USAGE, FerError


@dataclass(frozen=True)
class Recipe:
    arch: str = "vgg4"
    width: float | None = None  # channel multiplier of the network (None: the network's own default)
    dropout: float | None = None  # dropout probability of the network's classifier (None: the network's own)
    epochs: int = 110  # full passes over the train split (unless `time` is set)
    time: float | None = None  # wall-clock budget in seconds: steps planned from the first steps, re-planned each epoch
    batch: int = 128  # images per optimizer step (global, summed over processes)
    optimizer: str = "sgd"  # "sgd" (Nesterov) or "adamw" or "adam"
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum; AdamW beta1
    weight_decay: float = 5e-4  # per step, not applied to BatchNorm weights or biases
    bn_bias_lr: float = 1.0  # learning-rate multiplier on BatchNorm biases (airbench's CIFAR-10 runs: 64)
    dirac: bool = False  # 3x3 convolutions start as the identity on their input channels (weight_init.py)
    whiten: bool = False  # the first convolution is a fixed whitening of the train faces' 3x3 patches
    schedule: str = "onecycle"  # "onecycle" (linear warm-up, cosine to 0), "cosine", "constant"
    warmup: float = 0.15  # fraction of all steps spent warming up
    label_smoothing: float = 0.1  # probability mass spread over the other classes
    ema: float = 0.0  # weight EMA decay per step (0 = off; 0.999 is typical)
    lookahead: bool = False  # pull the weights back to a slow copy every 5 steps (lookahead.py); not with ema
    bn_momentum: float = 0.1  # the newest batch's weight in BatchNorm's running statistics (PyTorch's default)
    rotate: float = 15.0  # augmentation: rotation, +- degrees
    scale: float = 0.15  # augmentation: zoom, +- fraction
    translate: float = 0.10  # augmentation: shift, +- fraction of the image side
    flip: float = 0.5  # augmentation: probability of a horizontal flip
    alternate_flip: bool = False  # instead: each face flipped in every other epoch, from a random first one
    erase: float = 0.5  # augmentation: probability of random erasing
    erase_min: float = 0.02  # erased area, fraction of the image, lower bound
    erase_max: float = 0.20  # erased area, upper bound
    tta: bool = True  # validation averages the prediction over a horizontal flip
    seed: int = 0  # model init, shuffling, augmentation and dropout all follow it
    # Training targets (crowd.py): fer2013 (the original labels), majority or probability (FER+ votes), or
    # auto (FER+ probability when the train split has votes, else fer2013); a run records what auto resolved to.
    labels: str = "auto"
    # Distillation (distill.py): checkpoints, run folders or `builtin` whose averaged predictions on the train
    # faces take `distill` of each target; paths as given (relative to where `fer train` runs).
    teachers: tuple[str, ...] = ()
    distill: float = 0.5  # share of each train target the teachers give (only with teachers)

    @property
    def augments(self) -> bool:
        return bool(self.rotate or self.scale or self.translate or self.flip or self.erase)

    @property
    def arch_args(self) -> dict[str, Any]:
        """The network's arguments beyond its class count, as checkpoints record them."""
        args = {"width": self.width, "dropout": self.dropout}
        return {k: v for k, v in args.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Recipe:
        """A recipe read from a file (a checkpoint's metadata): every field type- and range-checked."""
        if not isinstance(d, dict):
            raise FerError(f"{where}: recipe is not a JSON object")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v, default = d[f.name], f.default
            if isinstance(default, tuple):  # teachers: a JSON list of strings (how many: recipe_problem)
                ok = isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)
                v = tuple(v) if ok else v
            elif isinstance(default, bool):
                ok = isinstance(v, bool)
            elif isinstance(default, str):
                ok = isinstance(v, str)
            elif isinstance(default, int):
                ok = isinstance(v, int) and not isinstance(v, bool)
            else:  # float, or width (None or a number)
                ok = (v is None and default is None) or (
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                )
            if not ok:
                raise FerError(f"{where}: recipe field '{f.name}' has a value of the wrong type")
            values[f.name] = v
        r = cls(**values)
        problem = recipe_problem(r)
        if problem:
            raise FerError(f"{where}: recipe is invalid ({problem})")
        return r


# Every augmentation switched off (`fer train --no-augment`, the study preset, the demo).
NO_AUGMENT: dict[str, float] = {"rotate": 0.0, "scale": 0.0, "translate": 0.0, "flip": 0.0, "erase": 0.0}

PRESETS: dict[str, Recipe] = {
    "default": Recipe(),
    # The study: Adam lr 0.002, batch 512, 50 epochs, no augmentation, constant lr, no tricks.
    "study": Recipe(
        arch="vgg5", epochs=50, batch=512, optimizer="adam", lr=0.002, weight_decay=0.0, schedule="constant",
        warmup=0.0, label_smoothing=0.0, tta=False, **NO_AUGMENT,
    ),
    # For a CPU: the best model 19 minutes give (the whole `fer train` stays under 20), vgg4s with lighter
    # augmentation (no erasing, rotation +-10, zoom +-10%) and no dropout in its classifier. 5-minute runs
    # on this project's 2-core CPU (docs/recipes.md): PublicTest 55.7% with the default augmentation, 58.1%
    # with this one; vgg4c 48.9%; weight EMA 0.999 56.0% (it lags the one-cycle decay). 6-epoch runs on
    # the Intel Xeon (fp32): classifier dropout 0.5 (vgg4s's own) 52.9%, 0.2 57.9%, 0 59.3%; at short
    # budgets the network is under-fitted (train_acc below valid_acc), not over-fitted. BatchNorm biases
    # at 64x the rate (airbench's): on the AMD EPYC with AVX2 (fp32), 6 epochs, seeds 0 and 1, PublicTest
    # 59.9% -> 60.6% and 59.2% -> 60.9%, macro-F1 +2.5 to +4.7; the 19 minutes 63.6% -> 65.5%. Dirac
    # convolutions and a fixed whitening first layer (airbench's), the same CPU, 6 epochs: dirac 62.3% and
    # 61.3%, whitening 62.3% and 62.2% (seeds 0 and 1), both 62.3% with the best val (63.4%) and train loss.
    "cpu": Recipe(arch="vgg4s", dropout=0.0, time=19 * 60.0, batch=64, lr=0.05, rotate=10.0, scale=0.1,
                  erase=0.0, bn_bias_lr=64.0, dirac=True, whiten=True),
}  # fmt: skip


MAX_RECIPE_BYTES = 1 << 20
MAX_TEACHERS = 16


def recipe_file(path: str) -> Recipe:
    """A recipe from a JSON file: {"base": "cpu", "rotate": 15.0, ...}, any Recipe field on top of a preset
    (default: "default"), every field type- and range-checked. Fields the CLI has no option for
    (augmentation strengths, warm-up, momentum) are set this way."""
    from fercli.files import safejson

    try:
        with open(path, "rb") as f:
            d = safejson.loads(f.read(MAX_RECIPE_BYTES + 1), MAX_RECIPE_BYTES)
    except FileNotFoundError as e:
        raise FerError(f"{path}: no such recipe file", USAGE) from e
    except (OSError, ValueError) as e:
        raise FerError(f"{path}: not a JSON recipe file ({e})", USAGE) from e
    if not isinstance(d, dict):
        raise FerError(f"{path}: a recipe file holds one JSON object", USAGE)
    base = d.pop("base", "default")
    unknown = sorted(set(d) - {f.name for f in fields(Recipe)})
    if base not in PRESETS or unknown:
        what = f"unknown base '{base}'" if base not in PRESETS else f"unknown field '{unknown[0]}'"
        raise FerError(f"{path}: {what} (bases: {', '.join(PRESETS)}; fields: see recipe.py)", USAGE)
    return Recipe.from_dict({**PRESETS[base].to_dict(), **d}, path)


def build_recipe(preset: str, overrides: dict[str, Any]) -> Recipe:
    """A preset, or a recipe file (*.json), with the options the user gave on top (None means 'not given')."""
    if preset.endswith(".json"):
        start = recipe_file(preset)
    elif preset in PRESETS:
        start = PRESETS[preset]
    else:
        raise FerError(f"unknown recipe '{preset}' (choose from {', '.join(PRESETS)}, or a .json file)", USAGE)
    given = {k: v for k, v in overrides.items() if v is not None}
    if "teachers" in given:  # one path, or several
        t = given["teachers"]
        given["teachers"] = (os.fspath(t),) if isinstance(t, (str, os.PathLike)) else tuple(os.fspath(x) for x in t)
    if "epochs" in given and "time" not in given:
        given["time"] = None  # --epochs on a preset with a time budget: the epochs win
    r = replace(start, **given)
    problem = recipe_problem(r)
    if problem:
        raise FerError(problem, USAGE)
    return r


def recipe_problem(r: Recipe) -> str | None:
    """What is wrong with a recipe, in the words of the option that sets it; None when nothing is."""
    checks = [
        (1 <= r.epochs <= 100_000, "--epochs must be in 1..100000"),
        (r.time is None or 1 <= r.time <= 30 * 86400, "--time must be between 1 second and 30 days"),
        (1 <= r.batch <= 1 << 20, "--batch must be in 1..1048576"),
        (r.lr > 0, "--lr must be positive"),
        (r.width is None or 0 < r.width <= 16, "--width must be in (0, 16]"),
        (r.dropout is None or 0 <= r.dropout < 1, "dropout must be in [0, 1)"),
        (r.optimizer in ("sgd", "adamw", "adam"), "--optimizer must be sgd, adamw or adam"),
        (r.schedule in ("onecycle", "cosine", "constant"), "--schedule must be onecycle, cosine or constant"),
        (0 <= r.warmup < 1, "--warmup must be in [0, 1)"),
        (0 <= r.ema < 1, "--ema must be in [0, 1)"),
        (not (r.lookahead and r.ema), "lookahead and --ema both average the weights: choose one"),
        (0 < r.bn_momentum <= 1, "bn_momentum must be in (0, 1]"),
        (0 <= r.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
        (0 <= r.weight_decay < 1, "--weight-decay must be in [0, 1)"),
        (0 < r.bn_bias_lr <= 1000, "bn_bias_lr must be in (0, 1000]"),
        (0 < r.momentum < 1, "momentum must be in (0, 1)"),
        (0 <= r.rotate <= 180, "rotate must be in [0, 180] degrees"),
        (0 <= r.scale < 1 and 0 <= r.translate <= 1, "scale must be in [0, 1) and translate in [0, 1]"),
        (0 <= r.flip <= 1 and 0 <= r.erase <= 1, "flip and erase are probabilities in [0, 1]"),
        (r.flip > 0 or not r.alternate_flip, "alternate_flip needs flip above 0"),
        (0 < r.erase_min <= r.erase_max <= 1, "erase_min and erase_max must satisfy 0 < min <= max <= 1"),
        (0 <= r.seed < 2**63, "--seed must be in [0, 2**63)"),
        (r.labels in LABEL_MODES, f"--labels must be one of {', '.join(LABEL_MODES)}"),
        (0 < r.distill <= 1, "--distill must be in (0, 1]"),
        (len(r.teachers) <= MAX_TEACHERS and all(r.teachers), f"--teacher: at most {MAX_TEACHERS}, none empty"),
    ]
    return next((message for ok, message in checks if not ok), None)


def lr_at(r: Recipe, step: int, total_steps: int) -> float:
    """Learning rate at optimizer step `step` (0-based) of `total_steps`: a pure function of the step,
    so a resumed run continues the schedule exactly."""
    if r.schedule == "constant":
        return r.lr
    warm = int(r.warmup * total_steps) if r.schedule == "onecycle" else 0
    if step < warm:
        return r.lr * (0.04 + 0.96 * step / warm)  # one-cycle starts at peak/25
    progress = (step - warm) / max(1, total_steps - warm)
    return r.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def recipe_for(preset: str, options: dict[str, Any], resume: str | None = None) -> Recipe:
    """The recipe `fer train` and `fercli.train` run: `preset` (a name or a .json file) with the options
    given on top. Options are Recipe fields (None: not given), with `time` as a duration ('20m', or
    seconds) and `augment` False for no augmentation. With `resume` the run's own recipe is used (set_up);
    options given then are named in a warning."""
    from fercli import console
    from fercli.engine.pace import parse_duration

    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - {f.name for f in fields(Recipe)} - {"augment"})
    if unknown:
        raise FerError(f"unknown recipe option {unknown[0]} (the options are Recipe's fields: "
                       f"{', '.join(f.name for f in fields(Recipe))}, and augment)", USAGE)  # fmt: skip
    if "time" in given and "epochs" in given:
        raise FerError("give --time or --epochs, not both (--time fixes the step count from the measured speed)",
                       USAGE)  # fmt: skip
    if isinstance(given.get("time"), str):
        given["time"] = parse_duration(given["time"])
    if given.pop("augment", True) is False:
        given.update(NO_AUGMENT)
    if resume is not None and given:
        console.warn("--resume continues the run's own recipe; the recipe options given are ignored")
    r = build_recipe(preset, given)
    from fercli.models import spec

    spec(r.arch)  # an unknown network fails before any data is read
    return r
