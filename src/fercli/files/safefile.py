"""Reading safetensors files defensively: header validated before any tensor is touched.

Format (https://github.com/huggingface/safetensors): 8-byte little-endian header length N, N bytes of
JSON {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the raw tensor bytes.
Nothing in it can run code; we still check every size and offset so that a damaged or hostile file
gives a one-line error rather than a crash deep inside numpy or torch.
"""

from __future__ import annotations

import math
import os
import struct
from typing import Any

import numpy as np

from fercli.errors import BAD_INPUT, NOT_FOUND, FerError
from fercli.files import safejson
from fercli.files.safepaths import note_input

# The largest real header is a checkpoint with its training faces' thumbnails (checkpoint.MAX_TRAIN_FACES
# of 64 bytes, compressed and base64'd): under 26 MB at the cap, about 2 MB for FER2013.
MAX_HEADER_BYTES = 32 << 20
MAX_DIMS = 8
DTYPES = {
    "U8": np.uint8, "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64,
    "F16": np.float16, "F32": np.float32, "F64": np.float64, "BOOL": np.bool_,
    "BF16": None,  # no numpy dtype; torch reads these
}  # fmt: skip


_MAGIC = {
    b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image", b"BM": "a BMP image",
    b"PK\x03\x04": "a zip archive", b"%PDF": "a PDF document", b"\x1f\x8b": "a gzip file",
}  # fmt: skip


def looks_like(head: bytes) -> str | None:
    """What the first bytes of a file say it is, for error messages: 'a PNG image', 'a CSV file', ...
    None when nothing is recognised."""
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return what
    if head[4:8] == b"ftyp":
        return "an ISO media file (HEIC, AVIF, MP4 or MOV)"
    if len(head) >= 10 and head[8:10] == b'{"':
        return "a safetensors file"
    text = head.lstrip(b"\xef\xbb\xbf")[:200]
    if text and all(32 <= c < 127 or c in (9, 10, 13) for c in text):
        return "a CSV file" if b"," in text or b"pixels" in text.lower() else "a text file"
    return None


def read_header(path: str | os.PathLike, note: bool = True) -> tuple[dict[str, Any], dict[str, str], int]:
    """Return (tensor entries, metadata, offset of the data region), or raise FerError. `note`: the file is an
    input of this command (safepaths.note_input); False for a look at an output about to be replaced."""
    path = str(path)
    if note:
        note_input(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise FerError(f"{path}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER_BYTES, size - 8):
                what = looks_like(head + f.read(200))
                hint = f": it looks like {what}" if what else " (bad header length)"
                if what in ("a CSV file", "a text file"):
                    hint += " (the model comes first: fer predict MODEL INPUT...)"
                raise FerError(f"{path}: not a safetensors file{hint}")
            raw = f.read(n)
    except FileNotFoundError as e:
        raise FerError(f"{path}: no such file", NOT_FOUND) from e
    except IsADirectoryError as e:
        raise FerError(f"{path}: is a folder, expected a .safetensors file", BAD_INPUT) from e
    except OSError as e:
        raise FerError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        header = safejson.loads(raw, MAX_HEADER_BYTES)
    except ValueError as e:
        raise FerError(f"{path}: not a safetensors file (header: {e})") from e
    del raw
    if not isinstance(header, dict):
        raise FerError(f"{path}: not a safetensors file (header is not an object)")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FerError(f"{path}: malformed safetensors metadata")
    data_len = size - 8 - n
    for name, e in header.items():
        ok = (
            isinstance(e, dict)
            and isinstance(e.get("dtype"), str)
            and e["dtype"] in DTYPES
            and isinstance(e.get("shape"), list)
            and len(e["shape"]) <= MAX_DIMS
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in e["shape"])
            and isinstance(e.get("data_offsets"), list)
            and len(e["data_offsets"]) == 2
            and all(isinstance(o, int) for o in e["data_offsets"])
        )
        if ok:
            lo, hi = e["data_offsets"]
            itemsize = 2 if e["dtype"] == "BF16" else np.dtype(DTYPES[e["dtype"]]).itemsize
            # Python's integers: numpy's int64 product of [2**32, 2**32] wraps around to 0
            ok = 0 <= lo <= hi <= data_len and hi - lo == itemsize * math.prod(e["shape"])
        if not ok:
            raise FerError(f"{path}: damaged safetensors entry '{str(name)[:40]}'")
    # As the format requires: tensors tile the data region exactly, no gaps, no overlaps, no tail.
    spans = sorted(tuple(e["data_offsets"]) for e in header.values())
    end = 0
    for lo, hi in spans:
        if lo != end:
            raise FerError(f"{path}: damaged safetensors file (tensor data overlaps or leaves gaps)")
        end = hi
    if end != data_len:
        raise FerError(f"{path}: damaged safetensors file (data region is {data_len} bytes, tensors cover {end})")
    return header, meta, 8 + n


def read_meta_json(path: str | os.PathLike, key: str, kind: str,
                   note: bool = True) -> tuple[dict[str, Any], dict, int]:  # fmt: skip
    """Header plus our JSON metadata under `key`; a clear error when the file is not one of ours."""
    header, meta, offset = read_header(path, note)
    if key not in meta:
        raise FerError(f"{path}: a safetensors file, but not a fercli {kind} (no '{key}' metadata)")
    try:
        info = safejson.loads(meta[key], MAX_HEADER_BYTES)
    except ValueError as e:
        raise FerError(f"{path}: malformed fercli metadata ({e})") from e
    if not isinstance(info, dict):
        raise FerError(f"{path}: malformed fercli metadata")
    return header, info, offset


def memmap_tensor(path: str | os.PathLike, header: dict, offset: int, name: str) -> np.ndarray:
    """A read-only numpy view of one tensor, straight from the page cache (no parse, no copy)."""
    e = header[name]
    lo, hi = e["data_offsets"]
    dtype = DTYPES[e["dtype"]]
    if hi == lo:
        return np.zeros(e["shape"], dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset + lo, shape=tuple(e["shape"]))
