"""Helpers for the bench scripts: where the real data is, and making the CSV layouts from it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer2013"


def fer2013_csvs() -> Path:
    """A folder with fer2013.csv, train.csv, test.csv, test_labels.csv from ../shared's to_csv.py.

    Set FER_CSV_DIR to reuse a folder made earlier; otherwise one is made in a temporary folder (~15 s).
    """
    given = os.environ.get("FER_CSV_DIR")
    if given and (Path(given) / "fer2013.csv").exists():
        return Path(given)
    if not (SHARED / "to_csv.py").exists():
        sys.exit(f"bench needs the real data: {SHARED} not found")
    out = Path(tempfile.mkdtemp(prefix="fercsv-"))
    print(f"writing the CSV layouts into {out} (set FER_CSV_DIR={out} to reuse)", file=sys.stderr)
    subprocess.run([sys.executable, str(SHARED / "to_csv.py"), str(out)], check=True)
    return out
