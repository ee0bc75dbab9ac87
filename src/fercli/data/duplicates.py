"""Faces that appear more than once in a data set: FER2013 holds pixel-identical copies within and across its
splits, so part of a test figure can be a training-set figure.

Two kinds, said apart everywhere:
  exact   byte-identical 48x48 faces (a hash of the pixels): found on every `fer prep`, within each split
          and from val and test onto train. Cheap: one pass over the faces.
  near    re-encoded copies (the image release's JPEG of a CSV face): thumbnails within SAME_FACE_RMS, the
          rule the leak check uses (leaks.seen_faces). Found for val and test against train with
          `fer prep --dedup`, which then drops every val and test face that copies a train face.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fercli.classes import SPLITS

TRAIN = SPLITS.index("train")


def _hashes(images: list[np.ndarray]) -> list[int]:
    """One hash per face of the pieces (uint8 [n_i,48,48]), in order."""
    return [hash(face.tobytes()) for piece in images for face in piece]


def exact_copies(images: list[np.ndarray], splits: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """(report, bool [N]: the val/test faces that are exact copies of a train face). The report counts, per
    split, faces that repeat an earlier face of the same split ("within") and, for val and test, faces
    that copy a train face ("of_train")."""
    hashes = _hashes(images)
    train = {h for h, s in zip(hashes, splits) if s == TRAIN}
    copies = np.array([s != TRAIN and h in train for h, s in zip(hashes, splits)], dtype=bool)
    report: dict[str, Any] = {}
    for k, name in enumerate(SPLITS):
        idx = np.flatnonzero(splits == k)
        if not len(idx):
            continue
        within = len(idx) - len({hashes[i] for i in idx})
        report[name] = {"within": int(within)} | ({} if k == TRAIN else {"of_train": int(copies[idx].sum())})
    return report, copies


def near_copies(images: list[np.ndarray], splits: np.ndarray) -> np.ndarray:
    """bool [N]: the val and test faces whose thumbnail lies within SAME_FACE_RMS of a train face's."""
    from fercli.data.leaks import face_thumbnails, seen_faces

    thumbs = np.concatenate([face_thumbnails(piece) for piece in images]) if images else np.zeros((0, 64), np.uint8)
    held_out = np.flatnonzero(splits != TRAIN)
    out = np.zeros(len(splits), dtype=bool)
    if len(held_out) and (splits == TRAIN).any():
        out[held_out] = seen_faces(thumbs[held_out], thumbs[splits == TRAIN])
    return out


def summary(report: dict[str, Any]) -> str | None:
    """One line for the prep output: "duplicates: 994 repeats within train, test 252 exact copies of train
    faces (+32 near-exact), ..."; None when there are none."""
    parts = []
    for name, r in report.items():
        if name == "dropped":
            continue
        if r.get("of_train"):
            near = f" (+{r['near_of_train']} near-exact)" if r.get("near_of_train") else ""
            parts.append(f"{name} {r['of_train']:,} exact copies of train faces{near}")
        if r.get("within"):
            parts.append(f"{r['within']:,} repeats within {name}")
    return ("duplicates: " + ", ".join(parts)) if parts else None
