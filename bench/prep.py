"""`fer prep` of the full fer2013.csv against the study's straightforward parse, side by side.

Run: python bench/prep.py        (needs ../shared/data/fer2013; FER_CSV_DIR reuses made CSVs)
Prints both times, the ratio and the peak memory (RSS) of `fer prep` against the CSV's size.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import fer2013_csvs


def straightforward(csv: Path):
    """What the study's notebook did: pandas, then one split() per row into a float tensor."""
    import torch  # imported only here: a parent holding torch would inflate the child's measured RSS

    df = pd.read_csv(csv)
    faces = [torch.tensor(np.array(s.split(), dtype=np.float32)).reshape(48, 48) for s in df["pixels"]]
    return torch.stack(faces)


def main() -> None:
    csv = fer2013_csvs() / "fer2013.csv"
    size_mb = csv.stat().st_size / 2**20
    out = Path(tempfile.mkdtemp()) / "d.safetensors"

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fercli", "-q", "prep", str(csv), "-o", str(out)])
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    t_fer = time.perf_counter() - t0
    assert os.waitstatus_to_exitcode(status) == 0
    peak_mb = usage.ru_maxrss / 1024

    t0 = time.perf_counter()
    x = straightforward(csv)
    t_plain = time.perf_counter() - t0

    print(f"rows                       {len(x)}")
    print(f"csv size                   {size_mb:.0f} MB")
    print(f"straightforward parse      {t_plain:.2f} s")
    print(f"fer prep (whole command)   {t_fer:.2f} s")
    print(f"speed-up                   {t_plain / t_fer:.1f}x")
    print(f"fer prep peak RSS          {peak_mb:.0f} MB ({peak_mb / size_mb:.2f}x the CSV)")


if __name__ == "__main__":
    main()
