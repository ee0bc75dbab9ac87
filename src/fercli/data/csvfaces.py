"""Streaming reader for every FER2013 CSV layout users have.

Layouts: `emotion,pixels,Usage` (fer2013.csv), `emotion,pixels` (train.csv), `id,pixels` or `pixels`
(test.csv), with the variants seen in the wild: `label`/`feature` column names, extra columns, gzip,
CRLF line ends, a UTF-8 BOM, quoted pixel strings, `-` for stdin.

Speed: a clean block of rows (no quotes, regular fields: the usual case) is cut into fields with
numpy, not per row in Python; anything irregular falls back to a per-row path that handles or reports
it by line. The pixel text of a whole block is then parsed at once with numpy byte arithmetic (digits
are bytes 48..57), a handful of vectorised passes over the bytes instead of 2,304 Python ints per
row, on two worker threads (numpy drops the GIL). Blocks of 8 MB keep peak memory bounded and let
`fer predict` emit its first rows before the input has been read to the end.
Measured: `python bench/prep.py`, 266 MB fer2013.csv on a 2-core CPU: 1.4-1.9 s for the whole
command, 11-14x the study's pandas + split() parse (2026-11-27).
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

from fercli.classes import CLASSES, IMAGE_SIZE, UNLABELED, USAGE_CODE
from fercli.errors import BAD_INPUT, NOT_FOUND, FerError
from fercli.files.safefile import looks_like
from fercli.files.safepaths import note_input

FORMATS_READ = "JPEG, PNG, BMP, GIF, WebP, TIFF, PGM/PPM"  # what data/imagefaces.py decodes

N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
BLOCK_BYTES = 8 << 20
# A FER2013 row is under 10 kB (2,304 pixels of at most 4 characters); a "line" past this is not a CSV
# row, and reading on would hold it all in memory (a gzip with no newline inflates without end).
MAX_LINE_BYTES = 1 << 20
LABEL_COLUMNS = ("emotion", "label", "labels", "class", "target")
PIXEL_COLUMNS = ("pixels", "pixel", "feature", "features", "image")
USAGE_COLUMNS = ("usage", "split")
ID_COLUMNS = ("id", "image_id", "imageid")


@dataclass
class Chunk:
    """A block of parsed rows: images [n,48,48] uint8, labels [n] int64 (-1 unlabeled),
    splits [n] int8 origin codes (classes.ORIGINS; -1: no Usage column), ids (the id column or the data row number)."""

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
    if path != "-":
        note_input(path)
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
    """The next line, at most MAX_LINE_BYTES long: a longer one is an error, never read in full."""
    try:
        line = stream.readline(MAX_LINE_BYTES + 1)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise FerError(f"{name}: corrupt or truncated gzip ({e})") from e
    except OSError as e:
        raise FerError(f"{name}: read error ({e})") from e
    if len(line) > MAX_LINE_BYTES:
        raise FerError(f"{name}: a line longer than {MAX_LINE_BYTES >> 20} MB: not a FER2013 CSV")
    return line


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
            line = _read_line(self.stream, self.name)
            if not line:
                raise FerError(f"{self.name}: empty file, expected a CSV header")
            if len(first) > MAX_LINE_BYTES:
                raise FerError(f"{self.name}: over {MAX_LINE_BYTES >> 20} MB of blank lines before the header")
            first += line
        what = looks_like(first[:64])
        if b"\x00" in first[:4096] or what not in (None, "a CSV file", "a text file"):
            raise FerError(f"{self.name}: not a CSV file: {f'it looks like {what}' if what else 'binary data'} "
                           f"(fer reads CSV, prepared .safetensors files, images: {FORMATS_READ}, folders and zips)")
        self.line_no = first.count(b"\n") or 1
        text = first.decode("utf-8-sig", errors="replace").strip("\r\n")
        try:
            header = [h.strip().strip('"').lower() for h in next(csv.reader([text]), [])]
        except csv.Error as e:
            raise FerError(f"{self.name} line {self.line_no}: malformed CSV header ({e})") from e
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
        # The main thread cuts blocks into rows; two workers parse pixels (numpy, which drops the GIL),
        # so both cores work. At most three blocks are in flight, to bound memory.
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending: deque = deque()
            for rows in self._blocks():
                pending.append((rows, pool.submit(_parse_rows, rows)))
                if len(pending) > 2:
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
            rows = self._split_clean(block)
            if rows is None:
                # The piece after the block's final newline is not a line: counting it would shift
                # every later line number by one per block.
                rows = self._split_rows(block[:-1].split(b"\n") if block.endswith(b"\n") else block.split(b"\n"))
            yield rows

    def _split_clean(self, block: bytes) -> _Rows | None:
        """Phase 1 for a clean block, in numpy: no per-row Python over the pixel bytes.

        Clean means no quotes, every line has exactly the header's number of fields, every label is one
        digit 0..6 and every pixel field is long enough to hold 2,304 pixels. Anything else returns None
        and goes to `_split_rows`, which handles (or reports, by line) every irregularity.
        """
        if b'"' in block:
            return None
        a = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(a == 10)  # [n] line ends (exclusive)
        if len(a) and a[-1] != 10:
            ends = np.append(ends, len(a))  # last line of the file without a newline
        n = len(ends)
        starts = np.empty(n, dtype=np.int64)
        starts[:1] = 0
        starts[1:] = ends[:-1] + 1
        ends = ends - (a[np.maximum(ends - 1, 0)] == 13)  # CRLF: the CR is not part of the last field
        commas = np.flatnonzero(a == 44)
        width = len(self.header)
        if n == 0 or len(commas) != n * (width - 1):
            return None
        # [n, width+1] field bounds: field k of line r spans bounds[r,k]+1 .. bounds[r,k+1] (exclusive).
        bounds = np.empty((n, width + 1), dtype=np.int64)
        bounds[:, 0] = starts - 1
        bounds[:, 1:-1] = commas.reshape(n, width - 1)
        bounds[:, -1] = ends
        if (np.diff(bounds, axis=1) < 1).any():  # a comma in the wrong line, or an empty field
            return None
        p0, p1 = bounds[:, self.i_pixels] + 1, bounds[:, self.i_pixels + 1]
        if (p1 - p0 < 2 * N_PIXELS - 1).any():
            return None
        out = _Rows()
        if self.i_label is not None:
            l0, l1 = bounds[:, self.i_label] + 1, bounds[:, self.i_label + 1]
            labels = a[l0].astype(np.int64) - 48
            if ((l1 - l0) != 1).any() or ((labels < 0) | (labels >= len(CLASSES))).any():
                return None
            out.labels = labels
        else:
            out.labels = np.full(n, UNLABELED, dtype=np.int64)
        if self.i_usage is not None:
            u0, u1 = bounds[:, self.i_usage] + 1, bounds[:, self.i_usage + 1]
            try:
                out.splits = np.asarray([USAGE_CODE[block[i:j].strip().lower().decode()] for i, j in zip(u0, u1)])
            except (KeyError, UnicodeDecodeError):
                return None
        else:
            out.splits = np.full(n, -1, dtype=np.int8)
        out.rows = np.arange(self.n_rows, self.n_rows + n)
        if self.i_id is not None:
            d0, d1 = bounds[:, self.i_id] + 1, bounds[:, self.i_id + 1]
            out.ids = [block[i:j].strip().decode("utf-8", "replace") for i, j in zip(d0, d1)]
        else:
            out.ids = [str(r) for r in out.rows]
        out.line_nos = list(range(self.line_no + 1, self.line_no + 1 + n))
        self.line_no += n
        self.n_rows += n
        # Everything outside the pixel fields becomes a separator, so that every token in the block is
        # a pixel of the line whose field holds it.
        buf = np.empty(len(a) + 4, dtype=np.uint8)
        buf[:3] = 32
        buf[-1] = 32
        body = buf[3:-1]
        body[:] = a
        gap_start = np.append(0, p1)  # gaps: before line 0's pixels, between pixel fields, after the last
        gap_len = np.append(p0, len(a)) - gap_start
        body[_ranges(gap_start, gap_len)] = 32
        out.packed = (buf, np.append(p0, p1[-1]))
        return out

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
                try:
                    fields = [f.encode() for f in next(csv.reader([line.decode("utf-8", "replace")]), [])]
                except csv.Error as e:
                    out.errors.append((self.line_no, f"malformed CSV quoting ({e})"))
                    continue
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
                if usage.lower() not in USAGE_CODE:
                    out.errors.append((self.line_no, f"unknown Usage '{usage[:20]}'"))
                    continue
                split = USAGE_CODE[usage.lower()]
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
    """One block's rows after phase 1; pixels still unparsed, either as one byte string per row (the
    Python path) or `packed`: a byte buffer whose tokens are the pixels, and each row's start in it."""

    pix: list[bytes] = field(default_factory=list)
    packed: tuple[np.ndarray, np.ndarray] | None = None
    labels: list[int] | np.ndarray = field(default_factory=list)
    splits: list[int] | np.ndarray = field(default_factory=list)
    rows: list[int] | np.ndarray = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    line_nos: list[int] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated aranges [s, s+len) without a Python loop."""
    lengths = np.maximum(lengths, 0)
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return np.arange(int(lengths.sum())) + offsets


def pack_pixels(pix: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Join per-row pixel strings into the packed form parse_pixels reads: buffer and row starts."""
    starts = np.zeros(len(pix) + 1, dtype=np.int64)
    np.cumsum(np.fromiter((len(p) + 1 for p in pix), dtype=np.int64, count=len(pix)), out=starts[1:])
    return np.frombuffer(b" ".join([b"  ", *pix, b""]), dtype=np.uint8), starts


def _parse_rows(rows: _Rows) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    return parse_pixels(*(rows.packed if rows.packed is not None else pack_pixels(rows.pix)))


def parse_pixels(buf: np.ndarray, row_start: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Parse packed pixel text into uint8 [n_good,48,48], the good-row mask and {row: reason} for the
    bad ones.

    `buf` is bytes with three leading separators and one trailing; `row_start[r]` (counted after the
    leading three) is where row r's pixels begin, `row_start[n]` where the last ends.
    Bytes b are turned into digit values b-48 (uint8 wrap-around makes every non-digit >= 10).
    A token ends at a digit followed by a non-digit; its value is read off the bytes up to its end
    through shifted views of the buffer, so no index arithmetic over the ~2,300 tokens per row is
    needed. The leading separators make every token end p satisfy p-3 >= 0, so views [3:], [2:],
    [1:], [0:] indexed by the same X give the bytes at p, p-1, p-2, p-3 for p = X + 3.
    """
    n = len(row_start) - 1
    good = np.ones(n, dtype=bool)
    reasons: dict[int, str] = {}
    if not n:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8), good, reasons
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
