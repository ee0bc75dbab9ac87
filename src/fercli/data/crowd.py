"""FER+ crowd votes: the class sets, and the training and evaluation targets made from 10 votes per face.

FER+ (Barsoum et al., ICMI 2016, arXiv:1608.01041) had 10 crowd workers tag every FER2013 face with one of
neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown or NF (not a face). The
prepared file keeps those 10 counts per face (uint8 [N,10], all zero where a face has no votes) beside
the FER2013 label. Targets follow the paper's code (microsoft/FERPlus, ferplus.py):

- outliers: a class that got a single vote is dropped (its count set to 0) before anything else;
- `majority`: the class holding more than half of the remaining votes, so there are no ties; a face
  without such a class, or whose majority is unknown or NF, gets no label (-1) and is left out of
  training and of the accuracy, as the paper leaves it out;
- `probability`: the remaining votes over the 8 emotions, normalised; a face whose largest count is
  unknown or NF (or that has no emotion votes left) is left out. The paper's code also keeps at most the
  top three emotions covering 75% of the votes; here every emotion that survives outlier removal counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fercli.classes import CLASSES, LABEL_MODES, UNLABELED
from fercli.errors import USAGE, FerError

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
FERPLUS_CLASSES = VOTE_COLUMNS[:8]
# FER2013 code -> the vote column of the same emotion (angry, disgust, fear, happy, sad, surprise, neutral)
VOTE_OF_FER2013 = np.array([4, 5, 6, 1, 3, 2, 0])
# What --labels auto picks when the train split has votes: probability, the better on val in this
# project's 19-minute cpu-recipe runs (87.76% vs 87.56% majority accuracy; PublicTest 87.00% vs 86.21%),
# as in the FER+ paper (docs/recipes.md).
AUTO_WITH_VOTES = "probability"


def clean(votes: np.ndarray) -> np.ndarray:
    """float32 [N,10]: the votes with single votes removed (the paper's outlier rule)."""
    v = np.asarray(votes, dtype=np.float32)
    return np.where(v > 1, v, 0.0).astype(np.float32)


def majority(votes: np.ndarray) -> np.ndarray:
    """int64 [N]: each face's FER+ class (index into FERPLUS_CLASSES), or -1 (no clear emotion majority)."""
    v = clean(votes)
    top = v.argmax(1)
    clear = v.max(1) > 0.5 * v.sum(1)
    return np.where(clear & (top < len(FERPLUS_CLASSES)), top, UNLABELED).astype(np.int64)


def distribution(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [N,8] vote shares over the emotions, bool [N] which faces have a usable distribution)."""
    v = clean(votes)
    emo = v[:, : len(FERPLUS_CLASSES)]
    keep = (emo.sum(1) > 0) & (emo.max(1) >= v[:, len(FERPLUS_CLASSES) :].max(1))
    shares = np.divide(emo, emo.sum(1, keepdims=True), out=np.zeros_like(emo), where=emo.sum(1, keepdims=True) > 0)
    return shares.astype(np.float32), keep


def crowd_share(votes: np.ndarray, column: np.ndarray) -> np.ndarray:
    """float [N]: the share of a face's raw votes (all 10 columns) that went to `column` (vote index)."""
    v = np.asarray(votes, dtype=np.float64)
    total = np.maximum(v.sum(1), 1)
    return v[np.arange(len(v)), column] / total


CLASS_SETS = ("model", "fer2013")
# --classes fer2013 on a FER+ model: each FER2013 class takes its own emotion's probability, and FER+'s
# contempt, which FER2013 lacks, is added to CONTEMPT_INTO (chosen by measurement: see docs/commands/predict.md).
CONTEMPT_INTO = "angry"


def class_set(model_classes: tuple[str, ...], wanted: str) -> tuple[tuple[str, ...], np.ndarray | None]:
    """(the classes to write, the [model_classes, written] matrix that maps probabilities onto them, or
    None when they are the model's own). `wanted` is --classes: model, or fer2013."""
    if wanted not in CLASS_SETS:
        raise FerError(f"--classes must be one of {', '.join(CLASS_SETS)}, got '{wanted}'", USAGE)
    if wanted == "model" or model_classes == CLASSES:
        return model_classes, None
    if model_classes != FERPLUS_CLASSES:
        raise FerError(f"--classes fer2013 maps FER+ models onto FER2013's classes; this model has its own "
                       f"({', '.join(model_classes)})", USAGE)  # fmt: skip
    fold = np.zeros((len(FERPLUS_CLASSES), len(CLASSES)), dtype=np.float32)
    fold[VOTE_OF_FER2013, np.arange(len(CLASSES))] = 1.0
    fold[FERPLUS_CLASSES.index("contempt"), CLASSES.index(CONTEMPT_INTO)] = 1.0
    return CLASSES, fold


def vote_columns(classes: tuple[str, ...]) -> np.ndarray:
    """Each class of a model's class set as a vote column (FER2013's classes map onto FER+'s)."""
    if classes == FERPLUS_CLASSES:
        return np.arange(len(classes))
    if classes == CLASSES:
        return VOTE_OF_FER2013
    raise FerError(f"classes {', '.join(classes)} have no FER+ vote columns")


def has_votes(votes: np.ndarray | None) -> np.ndarray | None:
    return None if votes is None else np.asarray(votes).sum(1) > 0


def truth(classes: tuple[str, ...], data: Any, idx: np.ndarray) -> np.ndarray:
    """The labels a model with these classes is scored against on faces `idx` (-1: not scored): the FER+
    majority for FER+ classes, the FER2013 label for FER2013's."""
    if classes == FERPLUS_CLASSES:
        if data.votes is None:
            raise FerError(f"{data.path}: this model predicts FER+ classes, but the data has no FER+ votes "
                           "(prep it with fer2013new.csv or the FER+ folder layout)", USAGE)  # fmt: skip
        return majority(data.votes[idx])
    if classes == CLASSES:
        return np.asarray(data.labels[idx])
    raise FerError(f"classes {', '.join(classes)}: no labels to score them against in {data.path}", USAGE)


def scored_faces(classes: tuple[str, ...], data: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(indices into the file, their labels) of the faces of `split` that a model with these classes is
    scored against: what eval, audit and valid_acc count."""
    idx = data.indices(split)
    y = truth(classes, data, idx)
    return idx[y >= 0], y[y >= 0]


@dataclass
class Targets:
    """What a run learns: the class set, train faces and their targets, val faces and their labels."""

    mode: str  # fer2013, majority or probability
    classes: tuple[str, ...]
    train: np.ndarray  # indices into the prepared file
    train_y: np.ndarray  # int64 [n] class labels, or float32 [n,k] distributions (probability)
    val: np.ndarray
    val_y: np.ndarray  # int64 [m]: what valid_acc counts (the majority for the FER+ modes)

    @property
    def soft(self) -> bool:
        return self.train_y.ndim == 2


def resolve_mode(mode: str, data: Any) -> str:
    if mode not in LABEL_MODES:
        raise FerError(f"--labels must be one of {', '.join(LABEL_MODES)}, got '{mode}'", USAGE)
    voted = has_votes(data.votes)
    tr = data.splits == 0
    if mode == "auto":
        return AUTO_WITH_VOTES if voted is not None and voted[tr].any() else "fer2013"
    if mode != "fer2013" and (voted is None or not voted[tr].any()):
        raise FerError(f"--labels {mode} needs FER+ votes, and {data.path} has none in its train split "
                       "(prep it with fer2013new.csv or the FER+ folder layout)", USAGE)  # fmt: skip
    return mode


def training_targets(data: Any, mode: str) -> Targets:
    """The faces and targets of one label mode; faces without a target are left out of train and val."""
    mode = resolve_mode(mode, data)
    classes = CLASSES if mode == "fer2013" else FERPLUS_CLASSES
    va, val_y = scored_faces(classes, data, "val")
    if mode != "probability":
        return Targets(mode, classes, *scored_faces(classes, data, "train"), va, val_y)
    tr = data.indices("train")
    shares, keep = distribution(data.votes[tr])
    return Targets(mode, classes, tr[keep], shares[keep], va, val_y)
