"""Distillation: a run's targets mixed with what trained models (the teachers) predict for each train face.

The teachers (checkpoints, run folders, or `builtin`) run once, before the first step, over the
un-augmented train faces with their own TTA; the average of their probabilities takes `distill` of each
face's target (FER+ vote shares, or a one-hot FER2013 label). Once, not per augmented batch: on this
project's 2-core CPU two vgg4s teachers cost about what a student's step does per image, so predicting
per batch would have halved the epochs a time budget gives.

A teacher that trained on the val split's faces would make val reward copying it, so set-up refuses one
(as `fer eval` refuses a leaky split). Each teacher's SHA-256 goes into the run's checkpoints: a resumed
run checks its teachers are the same files, and a shipped model says what it was distilled from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fercli import console
from fercli.data.crowd import Targets
from fercli.errors import USAGE, FerError

HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def teacher_targets(teachers: tuple[str, ...], weight: float, targets: Targets, data: Any, faces: np.ndarray,
                    device: torch.device, recorded: Any = None,
                    ) -> tuple[np.ndarray, list[dict[str, str]]]:  # fmt: skip
    """(float32 [N, classes] train targets, one {"path", "sha256"} per teacher) for the train faces
    `faces` (uint8 [N,48,48], in `targets.train`'s order). `recorded`: a resumed run's teachers, which
    these must match file for file."""
    from fercli.data.leaks import LEAK_REFUSE, overlap
    from fercli.files.checkpoint import train_faces
    from fercli.infer.model import FerModel

    k = len(targets.classes)
    probs = np.zeros((len(faces), k), dtype=np.float64)
    record = []
    for ref in teachers:
        teacher = FerModel.load(ref, device=str(device))  # a bad file fails here, named
        if tuple(teacher.classes) != tuple(targets.classes):
            raise FerError(f"{teacher.path}: the teacher predicts {len(teacher.classes)} classes "
                           f"({', '.join(teacher.classes)}), the run trains on {k} "
                           f"({', '.join(targets.classes)})", USAGE)  # fmt: skip
        thumbs = train_faces(teacher.path)
        if thumbs is not None:
            seen = overlap(thumbs, data, targets.val)
            if seen.other_cut > LEAK_REFUSE * seen.faces:
                raise FerError(f"{teacher.path}: the teacher trained on {seen.other_cut:,} of the "
                               f"{seen.faces:,} val faces of {data.path}; val would reward copying it "
                               "(distil from a teacher trained on this file's train split)", USAGE)  # fmt: skip
        record.append({"path": str(teacher.path), "sha256": file_sha256(teacher.path)})
        probs += teacher.predict(faces)
    if recorded is not None and [t["sha256"] for t in record] != _hashes(recorded):
        raise FerError(f"{record[0]['path'] if record else 'the teachers'}: the teachers changed since the run "
                       "started (their SHA-256 differ from what its checkpoint recorded)")  # fmt: skip
    probs /= len(teachers)
    base = targets.train_y
    if base.ndim == 1:  # class labels: one-hot
        base = np.eye(k, dtype=np.float64)[base]
    mixed = (1 - weight) * base + weight * probs
    agree = float((probs.argmax(1) == base.argmax(1)).mean())
    console.info(f"distilling from {console.plural(len(teachers), 'teacher')} ({weight:g} of each target); "
                 f"they agree with {100 * agree:.1f}% of the train targets")  # fmt: skip
    return mixed.astype(np.float32), record


def _hashes(recorded: Any) -> list[Any] | None:
    """The SHA-256 list a checkpoint's `teachers` holds; None where it is not a list (a damaged file)."""
    if not isinstance(recorded, list):
        return None
    return [t.get("sha256") if isinstance(t, dict) else None for t in recorded]
