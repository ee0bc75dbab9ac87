"""`fer prep`: read any mix of FER2013 sources into one prepared data file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from fercli import console
from fercli.classes import CLASSES, SPLITS, UNLABELED
from fercli.csvfaces import BadRows, read_csv
from fercli.errors import USAGE, FerError
from fercli.imagefaces import ImageFaces, is_image_source
from fercli.prepared import write_prepared
from fercli.synthetic import synthetic_faces

TRAIN, VAL, TEST = 0, 1, 2


@dataclass
class Source:
    """One input's faces, already assigned to splits."""

    images: list[np.ndarray]  # uint8 [n_i,48,48] pieces, concatenated only on disk
    labels: np.ndarray
    splits: np.ndarray
    rows: np.ndarray
    info: dict[str, Any]


def _default_split(path: str, labeled: bool) -> int:
    """Split for a source whose rows do not name one: by file name, else labeled -> train, unlabeled -> test."""
    stem = os.path.basename(path).lower()
    if "test" in stem:
        return TEST
    if "val" in stem:
        return VAL
    return TRAIN if labeled else TEST


def read_source(path: str, skip_bad: bool) -> tuple[Source, BadRows]:
    if is_image_source(path):
        return _read_images(path, skip_bad)
    chunks, reader = read_csv(path, skip_bad=skip_bad)
    labels = np.concatenate([c.labels for c in chunks])
    splits = np.concatenate([c.splits for c in chunks])
    if not reader.has_usage:
        splits = np.full(len(labels), _default_split(path, reader.labeled), dtype=np.int8)
    rows = np.concatenate([c.rows for c in chunks])
    if reader.i_id is not None:
        try:
            rows = np.asarray([int(i) for c in chunks for i in c.ids], dtype=np.int64)
        except ValueError:
            pass  # non-numeric ids: keep row numbers
    info = {"path": reader.name, "kind": "csv", "columns": reader.header, "rows": len(rows)}
    return Source([c.images for c in chunks], labels, splits, rows, info), reader.bad


def _read_images(path: str, skip_bad: bool) -> tuple[Source, BadRows]:
    faces = ImageFaces(path)
    bad = BadRows()
    images, labels, splits, rows = [], [], [], []
    for i, entry, img in faces.decoded(skip_bad, bad):
        images.append(img)
        labels.append(entry.label)
        splits.append(entry.split)
        rows.append(i)
    if not images:
        raise FerError(f"{path}: no usable images")
    labels_a = np.asarray(labels, dtype=np.int64)
    splits_a = np.asarray(splits, dtype=np.int8)
    unsplit = splits_a < 0
    if unsplit.any():
        splits_a[unsplit] = _default_split(path, bool((labels_a[unsplit] >= 0).any()))
    kind = "zip" if path.lower().endswith(".zip") else ("folder" if os.path.isdir(path) else "image")
    info = {"path": path, "kind": kind, "rows": len(images), "members": [e.path for e in faces.entries]}
    return Source([np.stack(images)], labels_a, splits_a, np.asarray(rows, dtype=np.int64), info), bad


def carve_val(labels: np.ndarray, splits: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """Move a stratified `frac` of each class of train into val; same seed, same rows."""
    rng = np.random.default_rng(seed)
    out = splits.copy()
    for c in range(len(CLASSES)):
        idx = np.flatnonzero((splits == TRAIN) & (labels == c))
        k = int(round(frac * len(idx)))
        out[rng.permutation(idx)[:k]] = VAL
    return out


def prepare(
    sources: list[str],
    out: str,
    val_frac: float = 0.1,
    seed: int = 0,
    skip_bad: bool = False,
    synthetic: int = 0,
) -> dict[str, Any]:
    """Read every source, carve val where none came, write `out`; return the metadata written."""
    if not 0 <= val_frac < 1:
        raise FerError(f"--val-frac must be in [0, 1), got {val_frac}", USAGE)
    if not sources and not synthetic:
        raise FerError("give at least one SOURCE (a CSV, image folder, zip or -) or --synthetic N", USAGE)
    if sum(s == "-" for s in sources) > 1:
        raise FerError("stdin (-) can be read only once", USAGE)
    parts: list[Source] = []
    for path in sources:
        src, bad = read_source(path, skip_bad)
        if bad.count:
            console.warn(f"{path}: skipped {bad.count} bad rows; first: " + "; ".join(bad.first))
            src.info["skipped"] = bad.count
        parts.append(src)
    if synthetic:
        images, labels = synthetic_faces(synthetic, seed)
        # A toy test split of 10% so that eval and confmat have held-out faces to show.
        splits = np.where(np.arange(synthetic) % 10 == 9, TEST, TRAIN).astype(np.int8)
        info = {"path": "synthetic", "kind": "synthetic", "rows": synthetic, "seed": seed}
        parts.append(Source([images], labels, splits, np.arange(synthetic, dtype=np.int64), info))

    def joined(field: str) -> np.ndarray:
        return np.concatenate([getattr(p, field) for p in parts])

    images = [piece for p in parts for piece in p.images]
    labels, splits, rows = joined("labels"), joined("splits"), joined("rows")
    source = np.concatenate([np.full(len(p.labels), i, dtype=np.int16) for i, p in enumerate(parts)])

    val_carved = None
    has_val = bool((splits == VAL).any())
    if not has_val and val_frac > 0 and ((splits == TRAIN) & (labels != UNLABELED)).any():
        splits = carve_val(labels, splits, val_frac, seed)
        val_carved = {"from": "train", "frac": val_frac, "seed": seed, "stratified": True}
        console.info(f"no validation split in the sources: carved {val_frac:g} of train (seed {seed})")
    return write_prepared(out, images, labels, splits, rows, source, [p.info for p in parts], val_carved)


def counts_table(meta: dict[str, Any]):
    """Rich table of faces per split and emotion, from a prepared file's metadata."""
    from rich.table import Table

    table = Table(title=f"prepared data ({meta['content_hash']})")
    table.add_column("split")
    for c in (*CLASSES, "unlabeled", "total"):
        table.add_column(c, justify="right")
    for split in SPLITS:
        row = meta["counts"].get(split)
        if row:
            table.add_row(split, *(str(row[c]) for c in (*CLASSES, "unlabeled", "total")))
    return table
