"""`fer prep`: read any mix of FER2013 sources, and FER+ crowd votes, into one prepared data file."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from fercli import console
from fercli.classes import CLASSES, ORIGINS, SPLITS, UNLABELED, USAGE_CODE
from fercli.data import crowd
from fercli.data.csvfaces import BadRows, read_csv
from fercli.data.duplicates import exact_copies, near_copies, summary
from fercli.data.imagefaces import ImageFaces, is_image_source
from fercli.data.prepared import write_prepared
from fercli.data.synthetic import synthetic_faces
from fercli.data.votefiles import VoteFile, is_votes_csv, pair_rows, read_label_csv, read_votes_csv
from fercli.errors import USAGE, FerError

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
    votes: np.ndarray | None = None  # uint8 [n,10] FER+ votes (zero rows: none)
    data_rows: np.ndarray | None = None  # a CSV's data row numbers (from 0), what a votes file pairs with
    has_usage: bool = False


# Words of a file name that name its split; matched whole (`latest.csv` is not a test file).
NAME_SPLITS = {"test": TEST, "testing": TEST, "publictest": TEST, "privatetest": TEST,
               "val": VAL, "valid": VAL, "validation": VAL}  # fmt: skip


def _default_split(path: str, labeled: bool) -> int:
    """Split for a source whose rows do not name one: a word of its file name (`fer2013_test.csv`,
    `val-faces.csv`), else labeled -> train, unlabeled -> test."""
    stem = os.path.splitext(os.path.basename(path).lower().removesuffix(".gz"))[0]
    for word in re.split(r"[^a-z]+", stem):
        if word in NAME_SPLITS:
            return NAME_SPLITS[word]
    return TRAIN if labeled else TEST


def read_source(path: str, skip_bad: bool) -> tuple[Source, BadRows]:
    if is_image_source(path):
        return _read_images(path, skip_bad)
    chunks, reader = read_csv(path, skip_bad=skip_bad)
    labels = np.concatenate([c.labels for c in chunks])
    splits = np.concatenate([c.splits for c in chunks])
    if not reader.has_usage:
        splits = np.full(len(labels), _default_split(path, reader.labeled), dtype=np.int8)
    data_rows = np.concatenate([c.rows for c in chunks])
    rows = data_rows
    if reader.i_id is not None:
        try:
            rows = np.asarray([int(i) for c in chunks for i in c.ids], dtype=np.int64)
        except ValueError:
            pass  # non-numeric ids: keep row numbers
    info = {"path": reader.name, "kind": "csv", "columns": reader.header, "rows": len(rows)}
    src = Source([c.images for c in chunks], labels, splits, rows, info, data_rows=data_rows,
                 has_usage=reader.has_usage)  # fmt: skip
    return src, reader.bad


def _join_votes(parts: list[Source], vf: VoteFile) -> None:
    """Give every CSV source its votes, row by row (votefiles.pair_rows); a CSV without a Usage column takes
    its faces' origins from the votes file."""
    csvs = [p for p in parts if p.info["kind"] == "csv"]
    if not csvs:
        raise FerError(f"{vf.path}: FER+ votes pair with the FER2013 CSV they describe: give it too "
                       "(fer prep fer2013.csv fer2013new.csv)", USAGE)  # fmt: skip
    for p in csvs:
        assert p.data_rows is not None
        name = str(p.info["path"])
        if p.info.get("skipped"):
            raise FerError(f"{name}: --skip-bad left out rows, so its rows no longer pair with {vf.path} "
                           "row by row: mend or remove the bad rows instead", USAGE)  # fmt: skip
        start = pair_rows(vf, name, len(p.data_rows), p.splits if p.has_usage else None)
        at = start + p.data_rows
        p.votes = vf.votes[at]
        if not p.has_usage:
            p.splits = vf.usage[at].copy()
        p.info["votes"] = {"path": vf.path, "from_row": start}


def _folder_of(rel: str) -> str:
    return rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""


def _folder_votes(faces: ImageFaces, skip_bad: bool, bad: BadRows) -> dict[str, np.ndarray] | None:
    """FER+ layout: the votes of every image a label.csv lists (keyed by path), and the images of its folder
    that it does not list dropped, as FER+'s own reader reads only listed images. None: no label.csv."""
    if not faces.label_files:
        return None
    votes: dict[str, np.ndarray] = {}
    voted_dirs = set()
    present = {e.path for e in faces.entries}
    for rel in faces.label_files:
        data, where = faces.read_bytes(rel)
        listed, blank, repeated = read_label_csv(data, where)
        folder = _folder_of(rel)
        voted_dirs.add(folder)
        for name, v in listed.items():
            if folder + name not in present:
                if not skip_bad:
                    raise FerError(f"{where}: lists '{name[:60]}', which is not in {folder or 'the folder'}")
                bad.add(f"{where}: no image '{name[:60]}'")
                continue
            votes[folder + name] = v
        if blank or repeated:
            console.info(f"{where}: {blank} lines without a name (FER+: not a face) and {repeated} repeated "
                         "names left out")  # fmt: skip
    before = len(faces.entries)
    faces.entries = [e for e in faces.entries if e.path in votes or _folder_of(e.path) not in voted_dirs]
    if len(faces.entries) < before:
        console.info(f"{faces.path}: {before - len(faces.entries)} images that no label.csv lists left out")
    return votes


def _read_images(path: str, skip_bad: bool) -> tuple[Source, BadRows]:
    faces = ImageFaces(path, skip_bad)
    bad = BadRows()
    folder_votes = _folder_votes(faces, skip_bad, bad)
    images, labels, splits, rows, votes = [], [], [], [], []
    none = np.zeros(len(crowd.VOTE_COLUMNS), dtype=np.uint8)
    for i, entry, img in faces.decoded(skip_bad, bad):
        images.append(img)
        labels.append(entry.label)
        splits.append(entry.split)
        rows.append(i)
        if folder_votes is not None:
            votes.append(folder_votes.get(entry.path, none))
    if not images:
        raise FerError(f"{path}: no usable images")
    labels_a = np.asarray(labels, dtype=np.int64)
    splits_a = np.asarray(splits, dtype=np.int8)
    unsplit = splits_a < 0
    # A source that is itself a split folder or zip (FER2013Train/, FER2013Valid.zip, train/): its name
    named = USAGE_CODE.get(os.path.splitext(os.path.basename(os.path.normpath(path)))[0].lower())
    if unsplit.any() and named is not None:
        splits_a[unsplit] = named
    elif unsplit.any():
        splits_a[unsplit] = _default_split(path, bool((labels_a[unsplit] >= 0).any()))
    kind = "zip" if path.lower().endswith(".zip") else ("folder" if os.path.isdir(path) else "image")
    info = {"path": path, "kind": kind, "rows": len(images), "members": [e.path for e in faces.entries]}
    src = Source([np.stack(images)], labels_a, splits_a, np.asarray(rows, dtype=np.int64), info)
    if folder_votes is not None:
        src.votes = np.stack(votes)
        src.info["votes"] = {"path": "label.csv", "files": faces.label_files}
    return src, bad


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
                lines.append(f"{os.path.basename(os.path.normpath(str(part.info['path'])))}: {what} ({n})")
        if s == VAL and carved.any():
            assert val_carved is not None
            lines.append(f"carved from train: {val_carved['frac']:g} of each class, seed {val_carved['seed']} "
                         f"({int(carved.sum())})")  # fmt: skip
        if lines:
            out[name] = lines
    return out


def strata(labels: np.ndarray, votes: np.ndarray | None) -> np.ndarray:
    """What carving val keeps proportional: the FER2013 label, else the FER+ majority (as 7 + its index),
    else -1 (such faces stay in train)."""
    if votes is None:
        return labels
    maj = crowd.majority(votes)
    return np.where(labels >= 0, labels, np.where(maj >= 0, len(CLASSES) + maj, UNLABELED))


def carve_val(labels: np.ndarray, splits: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """Move a stratified `frac` of each class (`labels`: strata()) of train into val; same seed, same rows."""
    rng = np.random.default_rng(seed)
    out = splits.copy()
    for c in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero((splits == TRAIN) & (labels == c))
        k = int(round(frac * len(idx)))
        out[rng.permutation(idx)[:k]] = VAL
    return out


def _check_replaceable(out: str) -> dict[str, Any] | None:
    """An existing -o may be replaced only when it is a prepared data file: prep never writes over a
    checkpoint, a CSV or a photo someone named by mistake. Returns that file's metadata (None when -o is new)."""
    if not os.path.isfile(out):
        return None
    from fercli.data.prepared import META_KEY
    from fercli.files.safefile import looks_like, read_meta_json

    try:
        return read_meta_json(out, META_KEY, "prepared data file", note=False)[1]
    except FerError:
        with open(out, "rb") as f:
            what = looks_like(f.read(256)) or "not a prepared data file"
        raise FerError(f"{out}: exists and is {what}, not a prepared data file; refusing to replace it "
                       "(choose another -o)", USAGE) from None  # fmt: skip


def _made_from(meta: dict[str, Any]) -> str:
    """The sources a prepared file's metadata names, as one short phrase: "fer2013.csv.gz + fer2013new.csv"."""
    names = []
    for info in meta.get("sources") or []:
        if isinstance(info, dict):
            names.append(os.path.basename(str(info.get("path", "?"))))
            votes = info.get("votes")
            if isinstance(votes, dict) and os.path.basename(str(votes.get("path", ""))) not in names:
                names.append(os.path.basename(str(votes.get("path", ""))))
    return " + ".join(names) or "no sources"


def _refuse_other_data(out: str, old: dict[str, Any] | None, new: dict[str, Any], force: bool) -> None:
    """A prepared file is replaced silently only by the same data (the same faces, labels, splits and votes:
    its content hash): models trained on it name that hash, and their leak check reads its splits."""
    if old is None or force or old.get("content_hash") == new["content_hash"]:
        return
    raise FerError(f"{out}: holds other prepared data ({old.get('content_hash', 'no hash')}, from "
                   f"{_made_from(old)}) than this prep makes ({new['content_hash']}, from {_made_from(new)}); "
                   "refusing to replace it (another -o keeps both; --force replaces it)", USAGE)  # fmt: skip


def prepare(
    sources: list[str],
    out: str,
    val_frac: float = 0.1,
    seed: int = 0,
    skip_bad: bool = False,
    synthetic: int = 0,
    protocol: str = "auto",
    dedup: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Read every source, carve val where none came, count duplicates (data/duplicates.py; with `dedup`,
    drop the val and test copies of train faces), write `out`; return the metadata written. An existing
    `out` of other data is replaced only with `force`."""
    if not 0 <= val_frac < 1:
        raise FerError(f"--val-frac must be in [0, 1), got {val_frac}", USAGE)
    if not sources and not synthetic:
        raise FerError("give at least one SOURCE (a CSV, image folder, zip or -) or --synthetic N", USAGE)
    if sum(s == "-" for s in sources) > 1:
        raise FerError("stdin (-) can be read only once", USAGE)
    existing = _check_replaceable(out)
    parts: list[Source] = []
    vote_files = [p for p in sources if is_votes_csv(p)]
    if len(vote_files) > 1:
        raise FerError(f"give one FER+ votes file, not {len(vote_files)} ({', '.join(vote_files)})", USAGE)
    for path in sources:
        if path in vote_files:
            continue
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
    if vote_files:
        _join_votes(parts, read_votes_csv(vote_files[0]))

    def joined(field: str) -> np.ndarray:
        return np.concatenate([getattr(p, field) for p in parts])

    images = [piece for p in parts for piece in p.images]
    labels, origins, rows = joined("labels"), joined("splits"), joined("rows")
    source = np.concatenate([np.full(len(p.labels), i, dtype=np.int16) for i, p in enumerate(parts)])
    votes = None
    if any(p.votes is not None for p in parts):
        width = len(crowd.VOTE_COLUMNS)
        votes = np.concatenate([np.zeros((len(p.labels), width), np.uint8) if p.votes is None else p.votes
                                for p in parts])  # fmt: skip
    splits, protocol = resolve_splits(origins, protocol)

    val_carved = None
    has_val = bool((splits == VAL).any())
    key = strata(labels, votes)
    if not has_val and val_frac > 0 and ((splits == TRAIN) & (key != UNLABELED)).any():
        splits = carve_val(key, splits, val_frac, seed)
        val_carved = {"from": "train", "frac": val_frac, "seed": seed, "stratified": True}
        console.info(f"no validation split in the sources: carved {val_frac:g} of train (seed {seed})")
    report, copies = exact_copies(images, splits)
    if dedup:
        near = near_copies(images, splits)
        for k, name in enumerate(SPLITS):
            if k != TRAIN and name in report:
                report[name]["near_of_train"] = int((near & ~copies & (splits == k)).sum())
        keep = ~(copies | near)
        report["dropped"] = {name: int((~keep & (splits == k)).sum()) for k, name in enumerate(SPLITS) if k != TRAIN}
        images, labels, splits, rows, source, origins = _kept(keep, images, labels, splits, rows, source, origins)
        votes = None if votes is None else votes[keep]
    origin = {"protocol": protocol, "splits": split_sources(origins, splits, source, parts, val_carved)}
    return write_prepared(out, images, labels, splits, rows, source, [p.info for p in parts], val_carved, origin,
                          votes, duplicates=report,
                          before_write=lambda meta: _refuse_other_data(out, existing, meta, force))  # fmt: skip


def _kept(keep: np.ndarray, images: list[np.ndarray], *columns: np.ndarray) -> tuple:
    """The faces where `keep` is true: the image pieces cut piece by piece (never joined), then each column."""
    pieces, at = [], 0
    for piece in images:
        pieces.append(piece[keep[at : at + len(piece)]])
        at += len(piece)
    return (pieces, *(c[keep] for c in columns))


def _split_table(title: str, counts: dict[str, dict[str, int]], classes: tuple[str, ...], unlabeled: str,
                 came: dict[str, list[str]] | None = None, note: str | None = None):  # fmt: skip
    """Rich table of faces per split and class (split_counts' layout), then where each split came from,
    one line each. Laid out for 80 columns: no vertical rules, one space between columns, nothing
    wrapped or cut (FER+'s eleven columns take 79)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, box=box.SIMPLE_HEAD, padding=0, show_edge=False, title_justify="left")
    table.add_column("split", no_wrap=True)
    for c in (*classes, unlabeled, "total"):
        table.add_column(c, justify="right", no_wrap=True)
    for split in SPLITS:
        row = counts.get(split)
        if row:
            table.add_row(split, *[str(row[c]) for c in (*classes, "unlabeled", "total")])
    lines = [f"{split}: {', '.join(came[split])}" for split in SPLITS if came and came.get(split)]
    lines += [note] if note else []
    return Group(table, *(Text(line) for line in lines)) if lines else table


def counts_table(meta: dict[str, Any]):
    """Rich table of faces per split and emotion, from a prepared file's metadata."""
    origin = meta.get("origin") or {}
    protocol = f", {origin['protocol']} protocol" if origin.get("protocol") else ""
    dup = meta.get("duplicates") or {}
    note = summary(dup)
    if note and "dropped" in dup:
        note += "; dropped by --dedup: " + ", ".join(f"{k} {n:,}" for k, n in dup["dropped"].items())
    elif note and any(r.get("of_train") for k, r in dup.items() if k != "dropped"):
        note += " (fer prep --dedup drops the val and test copies)"
    return _split_table(f"prepared data ({meta['content_hash']}{protocol})", meta["counts"], CLASSES, "unlabeled",
                        origin.get("splits", {}), note)  # fmt: skip


def votes_table(meta: dict[str, Any]):
    """Rich table of faces per split and FER+ majority class, when the prepared file has votes; else None."""
    info = meta.get("votes")
    if not info:
        return None
    return _split_table(f"FER+ crowd majority ({info['faces']} faces with votes; 'none': no clear majority)",
                        info["counts"], crowd.FERPLUS_CLASSES, "none")  # fmt: skip
