"""The prepared data file: every face of a data set in one safetensors file, opened as a memory map.

Tensors: images uint8 [N,48,48], labels int64 [N] (FER2013 code, -1 unlabeled), splits int8 [N] (0 train,
1 val, 2 test), rows int64 [N] (row number, or id, in its source), source int16 [N] (index into the sources
list), and when any source had FER+ crowd votes, votes uint8 [N,10] (crowd.VOTE_COLUMNS; all zero for a
face without votes). Metadata key "fercli-data": JSON with classes, splits, per-split counts (FER2013
labels, and FER+ majorities when there are votes), the sources, how val was carved, the fercli version and
a content hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fercli.classes import CLASSES, IMAGE_SIZE, SPLITS
from fercli.errors import USAGE, FerError
from fercli.files.atomic import atomic_path
from fercli.files.safefile import memmap_tensor, read_meta_json
from fercli.version import __version__

DEFAULT_DATA = "fer-data.safetensors"
META_KEY = "fercli-data"
FORMAT_VERSION = 1
TENSORS = {"images": "U8", "labels": "I64", "splits": "I8", "rows": "I64", "source": "I16"}
VOTES = "votes"  # optional tensor: uint8 [N,10]


def content_hash(images: list[np.ndarray], labels: np.ndarray, splits: np.ndarray,
                 votes: np.ndarray | None = None) -> str:  # fmt: skip
    h = hashlib.sha256()
    for a in (*images, labels, splits, *([] if votes is None else [votes])):
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()[:16]


def _save_streaming(path: Path, tensors: dict[str, list[np.ndarray]], metadata: dict[str, str]) -> None:
    """Write a safetensors file piece by piece, so the images are never copied into one buffer.

    Same bytes as safetensors' own writer would give (keys sorted, header padded to 8 bytes);
    the tests read the result back with the safetensors library.
    """
    codes = {np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8", np.dtype(np.int16): "I16", np.dtype(np.int64): "I64"}
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name in sorted(tensors):
        parts = tensors[name]
        nbytes = sum(p.nbytes for p in parts)
        shape = [sum(len(p) for p in parts), *parts[0].shape[1:]]
        header[name] = {"dtype": codes[parts[0].dtype], "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name in sorted(tensors):
            for part in tensors[name]:
                f.write(np.ascontiguousarray(part).data)


def split_counts(labels: np.ndarray, splits: np.ndarray,
                 classes: tuple[str, ...] = CLASSES) -> dict[str, dict[str, int]]:  # fmt: skip
    counts = {}
    for s, name in enumerate(SPLITS):
        lab = labels[splits == s]
        if not len(lab):
            continue
        per = np.bincount(lab[lab >= 0], minlength=len(classes))
        counts[name] = {c: int(n) for c, n in zip(classes, per)}
        counts[name]["unlabeled"] = int((lab < 0).sum())
        counts[name]["total"] = int(len(lab))
    return counts


def write_prepared(
    path: str | os.PathLike,
    images: list[np.ndarray],
    labels: np.ndarray,
    splits: np.ndarray,
    rows: np.ndarray,
    source: np.ndarray,
    sources: list[dict[str, Any]],
    val_carved: dict[str, Any] | None,
    origin: dict[str, Any] | None = None,
    votes: np.ndarray | None = None,
    duplicates: dict[str, Any] | None = None,
    before_write: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Write atomically and return the metadata written. `images` may come in pieces (uint8 [n_i,48,48]).
    `before_write` sees the metadata (its content hash included) first, and may refuse by raising."""
    from fercli.data import crowd

    meta = {
        "format": "fercli-data",
        "format_version": FORMAT_VERSION,
        "classes": list(CLASSES),
        "splits": list(SPLITS),
        "image_size": IMAGE_SIZE,
        "counts": split_counts(labels, splits),
        "sources": sources,
        "val_carved": val_carved,
        "origin": origin,  # the split protocol, and for each split the sources its faces came from
        "fercli_version": __version__,
        "content_hash": content_hash(images, labels, splits, votes),
        "duplicates": duplicates,  # data/duplicates.py: exact copies per split, near-exact and dropped with --dedup
    }
    if votes is not None:
        meta["votes"] = {"columns": list(crowd.VOTE_COLUMNS), "faces": int((votes.sum(1) > 0).sum()),
                         "counts": split_counts(crowd.majority(votes), splits, crowd.FERPLUS_CLASSES)}  # fmt: skip
    if before_write is not None:
        before_write(meta)
    tensors = {
        "images": [p.astype(np.uint8, copy=False) for p in images],
        "labels": [labels.astype(np.int64, copy=False)],
        "splits": [splits.astype(np.int8, copy=False)],
        "rows": [rows.astype(np.int64, copy=False)],
        "source": [source.astype(np.int16, copy=False)],
    }
    if votes is not None:
        tensors[VOTES] = [votes.astype(np.uint8, copy=False)]
    with atomic_path(path) as tmp:
        _save_streaming(tmp, tensors, {META_KEY: json.dumps(meta)})
    return meta


@dataclass
class PreparedData:
    path: Path
    meta: dict[str, Any]
    images: np.ndarray  # uint8 [N,48,48], memory-mapped
    labels: np.ndarray  # int64 [N]
    splits: np.ndarray  # int8 [N]
    rows: np.ndarray  # int64 [N]
    source: np.ndarray  # int16 [N]
    votes: np.ndarray | None = None  # uint8 [N,10] FER+ votes, when the data has them

    @classmethod
    def open(cls, path: str | os.PathLike) -> PreparedData:
        header, meta, offset = read_meta_json(path, META_KEY, "prepared data file")
        n = None
        for name, dtype in TENSORS.items():
            e = header.get(name)
            if e is None or e["dtype"] != dtype:
                raise FerError(f"{path}: prepared data file lacks a valid '{name}' tensor")
            n = e["shape"][0] if e["shape"] else 0
        shapes_ok = header["images"]["shape"][1:] == [IMAGE_SIZE, IMAGE_SIZE] and all(
            header[k]["shape"] == [n] for k in TENSORS if k != "images"
        )
        if not shapes_ok or header["images"]["shape"][0] != n:
            raise FerError(f"{path}: prepared data file has inconsistent tensor shapes")
        arrays = {k: memmap_tensor(path, header, offset, k) for k in TENSORS}
        if VOTES in header:
            if header[VOTES].get("dtype") != "U8" or header[VOTES].get("shape") != [n, 10]:
                raise FerError(f"{path}: prepared data file has a malformed 'votes' tensor")
            arrays[VOTES] = memmap_tensor(path, header, offset, VOTES)
        labels, splits = np.asarray(arrays["labels"]), np.asarray(arrays["splits"])
        if len(labels) and (labels.min() < -1 or labels.max() >= len(CLASSES)):
            raise FerError(f"{path}: prepared data file has labels outside -1..6")
        if len(splits) and (splits.min() < 0 or splits.max() >= len(SPLITS)):
            raise FerError(f"{path}: prepared data file has split codes outside 0..2")
        return cls(Path(path), meta, **arrays)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def content_hash(self) -> str:
        return str(self.meta.get("content_hash", ""))

    def source_name(self, i: int) -> str:
        """Where face i came from: the image's path or zip member, else its source file's name."""
        sources = self.meta.get("sources") or []
        k = int(self.source[i])
        info = sources[k] if 0 <= k < len(sources) and isinstance(sources[k], dict) else {}
        members = info.get("members")
        if isinstance(members, list) and 0 <= int(self.rows[i]) < len(members):
            return str(members[int(self.rows[i])])
        return os.path.basename(str(info.get("path", "")))

    def indices(self, split: str, labeled_only: bool = False) -> np.ndarray:
        if split not in SPLITS:
            raise FerError(f"--split '{split}': choose from {', '.join(SPLITS)}", USAGE)
        mask = self.splits == SPLITS.index(split)
        if labeled_only:
            mask &= self.labels >= 0
        return np.flatnonzero(mask)
