"""JSON from files a user is handed (safetensors headers, checkpoint metadata, recipes), parsed only after
its size, nesting depth and number lengths are checked: Python's parser recurses per level (100,000
nested brackets end in RecursionError) and refuses integers of over 4,300 digits with a ValueError, and
either would surface as a traceback.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

MAX_DEPTH = 64  # fercli's own JSON nests 4 deep
MAX_DIGITS = 100  # a float64 needs 17 significant digits; 100 is for anything a person could write
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # unrolled: linear and fast on long strings
_LONG_NUMBER = re.compile(rb"[0-9]{%d}" % (MAX_DIGITS + 1))


def loads(raw: bytes | str, max_bytes: int) -> Any:
    """Parse `raw` as JSON; ValueError with the reason (one short phrase) when it is refused or invalid."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise ValueError(f"JSON of {len(data):,} bytes, over the {max_bytes:,} accepted")
    bare = _STRING.sub(b'""', data)  # structure only: brackets inside strings do not nest
    b = np.frombuffer(bare, dtype=np.uint8)
    step = np.isin(b, (ord("["), ord("{"))).astype(np.int32) - np.isin(b, (ord("]"), ord("}")))
    if len(step) and int(np.cumsum(step).max()) > MAX_DEPTH:
        raise ValueError(f"JSON nested over {MAX_DEPTH} levels deep")
    if _LONG_NUMBER.search(bare):
        raise ValueError(f"a JSON number of over {MAX_DIGITS} digits")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"not valid JSON: {e}") from e
