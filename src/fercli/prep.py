"""`fer prep`: read any mix of FER2013 sources into one prepared data file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from fercli import console
from fercli.classes import CLASSES, ORIGINS, SPLITS, UNLABELED
from fercli.csvfaces import BadRows, read_csv
from fercli.errors import USAGE, FerError
from fercli.imagefaces import ImageFaces, is_image_source
from fercli.prepared import write_prepared
from fercli.synthetic import synthetic_faces

TRAIN, VAL, TEST = 0, 1, 2
PROTOCOLS = ("auto", "standard", "holdout")


@dataclass
class Source:
    """One input's faces, already assigned to splits."""

    images: list[np.ndarray]  # uint8 [n_i,48,48] pieces, concatenated only on disk
    labels: np.ndarray
    splits: np.ndarray  # origin codes (classes.ORIGINS) until resolve_splits maps them onto splits
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


def resolve_splits(origins: np.ndarray, protocol: str) -> tuple[np.ndarray, str]:
    """Origin codes -> split codes, and the protocol used.

    standard: FER2013's own protocol, Training -> train, PublicTest -> val, PrivateTest -> test.
    holdout: PublicTest and PrivateTest -> test, and val is carved from Training (--val-frac).
    auto: standard when PrivateTest faces are present, else holdout, so that data without PrivateTest
    (the Kaggle training file, the image release) keeps PublicTest as its test split and model selection
    never sees it. Split folders (train/, val/, test/) mean themselves under every protocol."""
    if protocol not in PROTOCOLS:
        raise FerError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got '{protocol}'", USAGE)
    public, private = ORIGINS.index("PublicTest"), ORIGINS.index("PrivateTest")
    if protocol == "auto":
        protocol = "standard" if (origins == private).any() else "holdout"
    to_split = {0: TRAIN, 1: VAL, 2: TEST, ORIGINS.index("Training"): TRAIN, private: TEST,
                public: VAL if protocol == "standard" else TEST}  # fmt: skip
    out = np.empty(len(origins), dtype=np.int8)
    for code, split in to_split.items():
        out[origins == code] = split
    return out, protocol


def split_sources(origins: np.ndarray, splits: np.ndarray, source: np.ndarray, parts: list[Source],
                  val_carved: dict[str, Any] | None) -> dict[str, list[str]]:  # fmt: skip
    """For each split, where its faces came from: 'fer2013.csv: PublicTest (3589)', 'carved: ...'."""
    out: dict[str, list[str]] = {}
    carved = np.zeros(len(splits), dtype=bool)
    if val_carved is not None:
        carved = (splits == VAL) & np.isin(origins, [0, ORIGINS.index("Training")])
    for s, name in enumerate(SPLITS):
        lines = []
        for i, part in enumerate(parts):
            mine = (splits == s) & (source == i) & ~carved
            for code in np.unique(origins[mine]):
                what = ORIGINS[code] if code >= 0 else "no split named"
                n = int((origins[mine] == code).sum())
                lines.append(f"{os.path.basename(str(part.info['path']))}: {what} ({n})")
        if s == VAL and carved.any():
            assert val_carved is not None
            lines.append(f"carved from train: {val_carved['frac']:g} of each class, seed {val_carved['seed']} "
                         f"({int(carved.sum())})")  # fmt: skip
        if lines:
            out[name] = lines
    return out


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
    protocol: str = "auto",
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
    labels, origins, rows = joined("labels"), joined("splits"), joined("rows")
    source = np.concatenate([np.full(len(p.labels), i, dtype=np.int16) for i, p in enumerate(parts)])
    splits, protocol = resolve_splits(origins, protocol)

    val_carved = None
    has_val = bool((splits == VAL).any())
    if not has_val and val_frac > 0 and ((splits == TRAIN) & (labels != UNLABELED)).any():
        splits = carve_val(labels, splits, val_frac, seed)
        val_carved = {"from": "train", "frac": val_frac, "seed": seed, "stratified": True}
        console.info(f"no validation split in the sources: carved {val_frac:g} of train (seed {seed})")
    origin = {"protocol": protocol, "splits": split_sources(origins, splits, source, parts, val_carved)}
    return write_prepared(out, images, labels, splits, rows, source, [p.info for p in parts], val_carved, origin)


def counts_table(meta: dict[str, Any]):
    """Rich table of faces per split and emotion, from a prepared file's metadata."""
    from rich.table import Table

    origin = meta.get("origin") or {}
    protocol = f", {origin['protocol']} protocol" if origin.get("protocol") else ""
    table = Table(title=f"prepared data ({meta['content_hash']}{protocol})")
    table.add_column("split")
    for c in (*CLASSES, "unlabeled", "total"):
        table.add_column(c, justify="right")
    table.add_column("from")
    for split in SPLITS:
        row = meta["counts"].get(split)
        if row:
            came = "\n".join(origin.get("splits", {}).get(split, []))
            table.add_row(split, *(str(row[c]) for c in (*CLASSES, "unlabeled", "total")), came)
    return table
