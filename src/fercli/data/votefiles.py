"""Readers for FER+ crowd votes: `fer2013new.csv` (one line per row of fer2013.csv) and the `label.csv`
of the FER+ folder layout (FER2013Train/, FER2013Valid/, FER2013Test/), and the row-by-row join of a
votes file with the FER2013 CSV it describes."""

from __future__ import annotations

import csv
import io
import zlib
from dataclasses import dataclass

import numpy as np

from fercli.classes import ORIGINS, USAGE_CODE
from fercli.data.crowd import VOTE_COLUMNS
from fercli.data.csvfaces import open_binary
from fercli.errors import BAD_INPUT, FerError

VOTES_HEADER = ("usage", "image name", *(c.lower() for c in VOTE_COLUMNS))
MAX_VOTES = 255  # per class and face: stored as uint8


@dataclass
class VoteFile:
    path: str
    usage: np.ndarray  # int8 [N] origin codes (classes.ORIGINS)
    names: list[str]  # the FER+ image name per row ('' where FER+ judged the row not a face)
    votes: np.ndarray  # uint8 [N,10]


def _header(text: str) -> tuple[str, ...]:
    """The lower-cased field names of a header line; () when it is not one CSV line (a stray \\r inside)."""
    try:
        fields = next(csv.reader([text.lstrip("\ufeff").strip("\r\n")]), [])
    except csv.Error:
        return ()
    return tuple(f.strip().lower() for f in fields)


def is_votes_csv(path: str) -> bool:
    """Whether a CSV file (not stdin) is a FER+ votes file, judged by its header."""
    if path == "-":
        return False
    try:
        stream, _ = open_binary(path)
        with stream:
            first = stream.readline(4096).decode("utf-8", "replace")
    except (FerError, OSError, EOFError, zlib.error):
        return False  # not readable as a votes file: the face reader says what is wrong with it
    return _header(first) == VOTES_HEADER


def _counts(fields: list[str], where: str) -> list[int]:
    out = []
    for f in fields:
        f = f.strip()
        if not (f.isdigit() and int(f) <= MAX_VOTES):
            raise FerError(f"{where}: vote count '{f[:20]}' is not a whole number 0..{MAX_VOTES}", BAD_INPUT)
        out.append(int(f))
    return out


def read_votes_csv(path: str) -> VoteFile:
    """Every row of a fer2013new.csv; a bad line is a one-line error naming it."""
    stream, name = open_binary(path)
    with stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
        reader = csv.reader(text)
        try:
            next(reader)
            usage, names, votes = [], [], []
            for fields in reader:
                where = f"{name} line {reader.line_num}"
                if not fields:
                    continue
                if len(fields) != len(VOTES_HEADER):
                    raise FerError(f"{where}: expected {len(VOTES_HEADER)} fields, found {len(fields)}", BAD_INPUT)
                code = USAGE_CODE.get(fields[0].strip().lower())
                if code is None:
                    raise FerError(f"{where}: unknown Usage '{fields[0][:20]}'", BAD_INPUT)
                usage.append(code)
                names.append(fields[1].strip())
                votes.append(_counts(fields[2:], where))
        except csv.Error as e:
            raise FerError(f"{name} line {reader.line_num}: malformed CSV ({e})", BAD_INPUT) from e
    if not votes:
        raise FerError(f"{name}: no vote rows", BAD_INPUT)
    return VoteFile(name, np.asarray(usage, dtype=np.int8), names, np.asarray(votes, dtype=np.uint8))


def _usage_name(code: int) -> str:
    return ORIGINS[code] if 0 <= code < len(ORIGINS) else "none"


def pair_rows(vf: VoteFile, csv_name: str, n_rows: int, origins: np.ndarray | None) -> int:
    """Where row 0 of a FER2013 CSV with `n_rows` data rows sits in the votes file (rows then pair one to
    one). A CSV with a Usage column (`origins`) pairs with the whole votes file and must agree on every
    row's Usage; one without (train.csv, test.csv) pairs with the whole file or with one Usage block of
    the same length (the first, in file order)."""
    n = len(vf.votes)
    if origins is not None:
        if n != n_rows:
            first = min(n, n_rows)
            short, long_ = (vf.path, csv_name) if n < n_rows else (csv_name, vf.path)
            raise FerError(f"{short} has {min(n, n_rows)} rows and {long_} {max(n, n_rows)}: row {first} "
                           f"(from 0) is in {long_} only; the files pair row by row", BAD_INPUT)  # fmt: skip
        bad = np.flatnonzero(vf.usage != origins)
        if len(bad):
            r = int(bad[0])
            raise FerError(f"{vf.path} line {r + 2}: Usage {_usage_name(vf.usage[r])}, but row {r} of {csv_name} "
                           f"says {_usage_name(origins[r])}: the files do not pair row by row", BAD_INPUT)  # fmt: skip
        return 0
    if n == n_rows:
        return 0
    edges = np.flatnonzero(np.diff(vf.usage.astype(np.int16))) + 1
    starts, ends = np.r_[0, edges], np.r_[edges, n]
    for s, e in zip(starts, ends):
        if e - s == n_rows:
            return int(s)
    blocks = ", ".join(f"{_usage_name(vf.usage[s])} {e - s}" for s, e in zip(starts, ends))
    raise FerError(f"{csv_name} has {n_rows} rows, but {vf.path} has {n} ({blocks}): they pair only row by row, "
                   "all rows or one Usage block", BAD_INPUT)  # fmt: skip


def read_label_csv(data: bytes, where: str) -> tuple[dict[str, np.ndarray], int, int]:
    """A FER+ label.csv (no header: name,"(x, y, w, h)",10 vote counts) -> ({name: uint8 [10]}, lines with
    a blank name, repeated names). A repeated name keeps its first line's votes, as the FER+ layout does."""
    out: dict[str, np.ndarray] = {}
    blank = repeated = 0
    reader = csv.reader(io.StringIO(data.decode("utf-8", "replace"), newline=""))
    try:
        for fields in reader:
            if not fields or not "".join(fields).strip():
                continue
            line = f"{where} line {reader.line_num}"
            if len(fields) != 2 + len(VOTE_COLUMNS):
                raise FerError(f"{line}: expected {2 + len(VOTE_COLUMNS)} fields (name, face box, "
                               f"{len(VOTE_COLUMNS)} vote counts), found {len(fields)}", BAD_INPUT)  # fmt: skip
            name = fields[0].strip()
            votes = np.asarray(_counts(fields[2:], line), dtype=np.uint8)
            if not name:
                blank += 1
            elif name in out:
                repeated += 1
            else:
                out[name] = votes
    except csv.Error as e:
        raise FerError(f"{where} line {reader.line_num}: malformed CSV ({e})", BAD_INPUT) from e
    return out, blank, repeated
