"""Streaming reader for every FER2013 CSV layout users have.

Layouts: `emotion,pixels,Usage` (fer2013.csv), `emotion,pixels` (train.csv), `id,pixels` or `pixels`
(test.csv), with the variants seen in the wild: `label`/`feature` column names, extra columns, gzip,
CRLF line ends, a UTF-8 BOM, quoted pixel strings, `-` for stdin.

Speed: the pixel strings of a whole block of rows are joined and parsed at once with numpy byte
arithmetic (digits are bytes 48..57), so the cost is a handful of vectorised passes over the bytes
instead of 2,304 Python ints per row. Blocks of ~16 MB keep peak memory bounded and let `fer predict`
emit its first rows before the input has been read to the end.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from fercli.classes import CLASSES, IMAGE_SIZE, SPLITS, UNLABELED, USAGE_TO_SPLIT
from fercli.errors import BAD_INPUT, NOT_FOUND, FerError

N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
BLOCK_BYTES = 8 << 20
LABEL_COLUMNS = ("emotion", "label", "labels", "class", "target")
PIXEL_COLUMNS = ("pixels", "pixel", "feature", "features", "image")
USAGE_COLUMNS = ("usage", "split")
ID_COLUMNS = ("id", "image_id", "imageid")


@dataclass
class Chunk:
    """A block of parsed rows: images [n,48,48] uint8, labels [n] int64 (-1 unlabeled),
    splits [n] int8 (-1 when the file has no Usage column), ids (the id column or the data row number)."""

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    ids: list[str]
    rows: np.ndarray  # data row number from 0 (header excluded)


@dataclass
class BadRows:
    """Rows skipped under --skip-bad: how many, and the first few with their reason."""

    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, where: str) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(where)


def open_binary(path: str) -> tuple[BinaryIO, str]:
    """Open a file or `-` (stdin) for reading bytes, unwrapping gzip by its magic number."""
    name = "<stdin>" if path == "-" else path
    try:
        raw = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except FileNotFoundError as e:
        raise FerError(f"{name}: no such file", NOT_FOUND) from e
    except IsADirectoryError as e:
        raise FerError(f"{name}: is a folder, expected a CSV file", BAD_INPUT) from e
    except OSError as e:
        raise FerError(f"{name}: cannot open ({e.strerror or e})", BAD_INPUT) from e
    stream = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
    if stream.peek(2)[:2] == b"\x1f\x8b":
        stream = gzip.GzipFile(fileobj=stream, mode="rb")
    return stream, name


def _read(stream: BinaryIO, name: str, size: int) -> bytes:
    try:
        return stream.read(size)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise FerError(f"{name}: corrupt or truncated gzip ({e})") from e
    except OSError as e:
        raise FerError(f"{name}: read error ({e})") from e


def _read_line(stream: BinaryIO, name: str) -> bytes:
    try:
        return stream.readline()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise FerError(f"{name}: corrupt or truncated gzip ({e})") from e


def _pick(header: list[str], names: tuple[str, ...]) -> int | None:
    for n in names:
        if n in header:
            return header.index(n)
    return None


class CsvFaces:
    """Iterate `Chunk`s over one CSV; `skip_bad` turns row errors into counted skips."""

    def __init__(self, path: str, skip_bad: bool = False, block_bytes: int = BLOCK_BYTES) -> None:
        self.stream, self.name = open_binary(path)
        self.skip_bad = skip_bad
        self.bad = BadRows()
        self.block_bytes = block_bytes
        self._read_header()

    def _read_header(self) -> None:
        first = b""
        while not first.strip():
            line = self.stream.readline()
            if not line:
                raise FerError(f"{self.name}: empty file, expected a CSV header")
            first += line
        self.line_no = first.count(b"\n") or 1
        text = first.decode("utf-8-sig", errors="replace").strip("\r\n")
        header = [h.strip().strip('"').lower() for h in next(csv.reader([text]))]
        self.header = header
        self.i_pixels = _pick(header, PIXEL_COLUMNS)
        if self.i_pixels is None:
            found = (", ".join(header) or "nothing")[:80]
            raise FerError(f"{self.name}: missing column 'pixels' (found: {found})")
        self.i_label = _pick(header, LABEL_COLUMNS)
        self.i_usage = _pick(header, USAGE_COLUMNS)
        self.i_id = _pick(header, ID_COLUMNS)
        self.labeled = self.i_label is not None
        self.has_usage = self.i_usage is not None
        self.n_rows = 0

    def __iter__(self) -> Iterator[Chunk]:
        # The main thread splits rows (Python), a worker parses pixels (numpy, which drops the GIL):
        # they overlap on a 2-core machine. At most two blocks are in flight, to bound memory.
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending: deque = deque()
            for rows in self._blocks():
                pending.append((rows, pool.submit(parse_pixels, rows.pix)))
                if len(pending) > 1:
                    chunk = self._finish(*pending.popleft())
                    if chunk is not None:
                        yield chunk
            while pending:
                chunk = self._finish(*pending.popleft())
                if chunk is not None:
                    yield chunk

    def _blocks(self) -> Iterator[_Rows]:
        while True:
            block = _read(self.stream, self.name, self.block_bytes)
            if not block:
                break
            if not block.endswith(b"\n"):
                block += _read_line(self.stream, self.name)  # finish the last row: blocks hold whole rows
            yield self._split_rows(block.split(b"\n"))

    def _split_rows(self, lines: list[bytes]) -> _Rows:
        """Phase 1, per row in Python (cheap: a few split calls per ~7 KB row): fields and labels."""
        width = len(self.header)
        out = _Rows()
        for raw in lines:
            self.line_no += 1
            # Each row is ~7 KB: avoid copies (rstrip/strip copy the whole row) unless needed.
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line or line.isspace():
                continue
            if b'"' in line:
                fields = [f.encode() for f in next(csv.reader([line.decode("utf-8", "replace")]))]
            else:
                fields = line.split(b",")
            if len(fields) != width:
                out.errors.append((self.line_no, f"expected {width} fields, found {len(fields)}"))
                continue
            label = UNLABELED
            if self.i_label is not None:
                text = fields[self.i_label].strip()
                if not (text.isdigit() and int(text) < len(CLASSES)):
                    shown = text.decode("utf-8", "replace")[:20]
                    out.errors.append((self.line_no, f"label '{shown}' is not a class code 0..6"))
                    continue
                label = int(text)
            split = -1
            if self.i_usage is not None:
                usage = fields[self.i_usage].strip().decode("utf-8", "replace")
                if usage.lower() not in USAGE_TO_SPLIT:
                    out.errors.append((self.line_no, f"unknown Usage '{usage[:20]}'"))
                    continue
                split = SPLITS.index(USAGE_TO_SPLIT[usage.lower()])
            pix = fields[self.i_pixels]
            if pix[:1] in (b" ", b'"') or pix[-1:] in (b" ", b'"'):
                pix = pix.strip(b' "')
            out.pix.append(pix)
            out.labels.append(label)
            out.splits.append(split)
            out.rows.append(self.n_rows)
            out.ids.append(
                fields[self.i_id].strip().decode("utf-8", "replace") if self.i_id is not None else str(self.n_rows)
            )
            out.line_nos.append(self.line_no)
            self.n_rows += 1
        return out

    def _finish(self, rows: _Rows, parsed: Future) -> Chunk | None:
        """Phase 3, in file order: report errors (first one raises unless skip_bad), drop bad rows."""
        images, good, reasons = parsed.result()
        errors = rows.errors + [(rows.line_nos[r], why) for r, why in reasons.items()]
        for line, why in sorted(errors):
            if not self.skip_bad:
                raise FerError(f"{self.name} line {line}: {why}")
            self.bad.add(f"line {line}: {why}")
        if not len(images):
            return None
        keep = np.flatnonzero(good)
        return Chunk(
            images=images,
            labels=np.asarray(rows.labels, dtype=np.int64)[keep],
            splits=np.asarray(rows.splits, dtype=np.int8)[keep],
            ids=[rows.ids[i] for i in keep],
            rows=np.asarray(rows.rows, dtype=np.int64)[keep],
        )


@dataclass
class _Rows:
    """One block's rows after phase 1; pixel strings still unparsed."""

    pix: list[bytes] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    splits: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    line_nos: list[int] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


def parse_pixels(pix: list[bytes]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Parse n space-separated pixel strings into uint8 [n_good,48,48], the good-row mask and
    {row: reason} for the bad ones.

    Bytes b are turned into digit values b-48 (uint8 wrap-around makes every non-digit >= 10).
    A token ends at a digit followed by a non-digit; its value is read off the bytes up to its end
    through shifted views of the buffer, so no index arithmetic over the ~2,300 tokens per row is
    needed.
    """
    n = len(pix)
    good = np.ones(n, dtype=bool)
    reasons: dict[int, str] = {}
    if not n:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8), good, reasons
    row_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter((len(p) + 1 for p in pix), dtype=np.int64, count=n), out=row_start[1:])
    # Three leading separators: every token end p has p-3 >= 0, so views [3:], [2:], [1:], [0:]
    # indexed by the same X give the bytes at p, p-1, p-2, p-3 for p = X + 3.
    buf = np.frombuffer(b" ".join([b"  ", *pix, b""]), dtype=np.uint8)
    dv = buf - np.uint8(48)
    digit = dv < 10
    if np.count_nonzero(digit) + np.count_nonzero(buf == 32) != len(buf):
        bad_pos = np.flatnonzero(~digit & (buf != 32)) - 3
        for r in np.unique(np.searchsorted(row_start, bad_pos, side="right") - 1):
            good[r] = False
            reasons[int(r)] = "a pixel is not an integer in 0..255"
    np.multiply(dv, digit, out=dv)  # non-digits count as 0
    x = np.flatnonzero(digit[3:-1] & ~digit[4:])  # token ends, shifted by 3
    vals = dv[3:][x].astype(np.int16)
    vals += dv[2:][x].astype(np.int16) * 10
    three = digit[2:][x] & digit[1:][x]  # a hundreds digit in the same token
    vals += dv[1:][x].astype(np.int16) * (three * np.int16(100))
    out_of_range = (vals > 255) | (three & digit[0:][x])  # >255, or a fourth digit
    first_tok = np.searchsorted(x, row_start)  # tokens of row r: first_tok[r]:first_tok[r+1]
    counts = np.diff(first_tok)
    if out_of_range.any():
        for r in np.unique(np.searchsorted(first_tok, np.flatnonzero(out_of_range), side="right") - 1):
            if good[r]:
                good[r] = False
                reasons[int(r)] = "a pixel is not an integer in 0..255"
    for r in np.flatnonzero(counts != N_PIXELS):
        if good[r]:
            good[r] = False
            reasons[int(r)] = f"expected {N_PIXELS} pixels, found {counts[r]}"
    if not good.all():
        vals = vals[np.repeat(good, counts)]
    return vals.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE), good, reasons


def read_csv(path: str, skip_bad: bool = False) -> tuple[list[Chunk], CsvFaces]:
    """Read a whole CSV as its list of Chunks (prep); returns the reader too for its header facts and skips."""
    reader = CsvFaces(path, skip_bad=skip_bad)
    chunks = list(reader)
    if not chunks:
        raise FerError(f"{reader.name}: no data rows" + (" left after --skip-bad" if reader.bad.count else ""))
    return chunks, reader
