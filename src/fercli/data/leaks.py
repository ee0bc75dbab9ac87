"""Training faces in a held-out figure: the one home of the leak check.

A face is told by its thumbnail (8x8 block means), which survives re-encoding: the image release's JPEG
and the CSV's pixels of one face are the same face here. Checkpoints carry the thumbnails of the faces
they were trained on (files/checkpoint.py stores them); `fer eval` and `fer confmat` then ask one
question of a split, whichever data file holds it: which of its faces did this model train on?

Those faces come in two kinds, told apart because the answer to each differs:
  copies within the data   the data file's own train split holds the face too: the data set repeats
                           itself (FER2013 copies 284 Training faces into PublicTest). Said in a note;
                           `fer prep --dedup` drops them.
  another cut              the data file holds the face out, but the model trained on it: the file was
                           prepared again with another val carve, layout or protocol. Refused above
                           LEAK_REFUSE of the split (exit 2, --force to score it anyway).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from fercli import console
from fercli.classes import IMAGE_SIZE
from fercli.errors import USAGE, FerError

THUMB = 8  # face fingerprints are 8x8 means of 6x6 pixel blocks
SAME_FACE_RMS = 4.0  # grey levels: thumbnails closer than this are the same face
LEAK_REFUSE = 0.01  # share of a split that may be another cut's training faces before eval refuses


def face_thumbnails(images: np.ndarray) -> np.ndarray:
    """uint8 [N,64]: each face's 8x8 block means, a fingerprint that survives JPEG re-encoding (the image
    release and the CSV of the same face differ by 1.3 grey levels per pixel on average) but tells
    different faces apart (their thumbnails differ by tens of levels)."""
    n, k = len(images), IMAGE_SIZE // THUMB
    out = np.empty((n, THUMB * THUMB), dtype=np.uint8)
    for i in range(0, n, 4096):  # bounded memory on a memory-mapped set
        block = np.asarray(images[i : i + 4096], dtype=np.float32).reshape(-1, THUMB, k, THUMB, k)
        out[i : i + 4096] = (block.mean((2, 4)) + 0.5).astype(np.uint8).reshape(-1, THUMB * THUMB)
    return out


def seen_faces(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """bool [len(query)]: which query thumbnails have a reference thumbnail within SAME_FACE_RMS.
    Tiled over both sides, so memory stays under ~20 MB whatever the sizes (a [2048 x 300,000] distance
    matrix would take 2.4 GB)."""
    import torch

    q_tile, r_tile = 1024, 4096  # the distance tile is [1024, 4096] float32: 16 MB
    limit = SAME_FACE_RMS**2 * query.shape[1]
    hit = torch.zeros(len(query), dtype=torch.bool)
    for j in range(0, len(reference), r_tile):
        r = torch.from_numpy(reference[j : j + r_tile].astype(np.float32))
        r2 = (r * r).sum(1)
        for i in range(0, len(query), q_tile):
            qb = torch.from_numpy(query[i : i + q_tile].astype(np.float32))
            d2 = (qb * qb).sum(1, keepdim=True) + r2 - 2 * qb @ r.T  # squared distances [q_tile, r_tile]
            hit[i : i + q_tile] |= (d2 <= limit).any(1)
    return hit.numpy()


@dataclass(frozen=True)
class Overlap:
    """How many faces of a scored split the model trained on, by kind (see the module's docstring)."""

    faces: int  # faces scored
    copies: int  # trained on, and copies of the data file's own train faces
    other_cut: int  # trained on, though the data file holds them out

    def as_json(self) -> dict[str, int]:
        return {"faces": self.faces, "copies_of_train": self.copies, "other_cut": self.other_cut}


def overlap(trained: np.ndarray, data: Any, idx: np.ndarray) -> Overlap:
    """Compare faces `idx` of a prepared file against the model's training thumbnails `trained`."""
    query = face_thumbnails(data.images[idx])
    seen = seen_faces(query, trained)
    own = np.zeros(len(idx), dtype=bool)
    train = data.indices("train")
    if seen.any() and len(train):
        own[seen] = seen_faces(query[seen], face_thumbnails(data.images[train]))
    return Overlap(len(idx), int(own.sum()), int((seen & ~own).sum()))


def check_split(model_path: str | os.PathLike, meta: dict[str, Any], data: Any, idx: np.ndarray, split: str,
                force: bool) -> Overlap | None:  # fmt: skip
    """Say how many faces of `split` the model trained on, the same way whichever data file holds them;
    refuse (without --force) when over LEAK_REFUSE of them are another cut's training faces. None when
    the checkpoint holds no thumbnails (the built-in model, older checkpoints)."""
    from fercli.files.checkpoint import train_faces

    trained_on = (meta.get("data") or {}).get("hash")
    other_file = bool(trained_on) and trained_on != data.content_hash
    if other_file:
        console.warn(f"{data.path} is not the data file this model was trained on "
                     f"(hash {data.content_hash}; trained on {trained_on})")  # fmt: skip
    thumbs = train_faces(model_path)
    if thumbs is None or split == "train":
        return None
    found = overlap(thumbs, data, idx)
    if found.copies:
        console.info(f"{found.copies:,} of {found.faces:,} faces of the {split} split copy training faces that "
                     f"the data itself repeats in its train split (the data set's own duplicates; fer prep --dedup "
                     f"drops them)")  # fmt: skip
    if found.other_cut:
        said = (
            f"{found.other_cut:,} of {found.faces:,} faces of the {split} split were training faces of this "
            f"model that {data.path} holds out (another split of the data): its score there is inflated"
        )
        if found.other_cut > LEAK_REFUSE * found.faces and not force:
            raise FerError(said + " (--force to score it anyway)", USAGE)
        console.warn(said)
    return found
