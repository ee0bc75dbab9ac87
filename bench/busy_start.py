"""A `--time` run whose first seconds share the machine, against one that has it to itself.

    python bench/busy_start.py [--time 3m] [--busy 20] [--faces 20000]

Both runs are `fer train --recipe cpu --time T` on the same synthetic faces, one after the other, each in
a fresh process. For the disturbed one, a 2-thread matrix-multiply loop runs beside it for its first
`--busy` seconds (an IDE indexing, a test suite). Prints each run's steps and wall time and the ratio of
steps; the goal is a ratio of 0.9 or more: the busy start costs its own seconds, not the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY = "import numpy as np\na = np.random.rand(1500, 1500)\nwhile True:\n    a @ a\n"


def run(data: Path, project: Path, name: str, budget: str, busy_s: float) -> dict:
    cmd = [sys.executable, "-m", "fercli", "-q", "train", "--data", str(data), "--recipe", "cpu", "--time", budget,
           "--project", str(project), "--name", name]  # fmt: skip
    hog = None
    if busy_s:
        hog = subprocess.Popen([sys.executable, "-c", BUSY], env={**os.environ, "OMP_NUM_THREADS": "2"})
    t0 = time.perf_counter()
    train = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    if hog is not None:
        try:
            train.wait(timeout=busy_s)
        except subprocess.TimeoutExpired:
            pass
        hog.kill()
        hog.wait()
    if train.wait():
        sys.exit(f"fer train failed ({name})")
    seconds = time.perf_counter() - t0
    args = json.loads((project / "train" / name / "args.json").read_text())
    return {"steps": args["total_steps"], "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time", default="3m")
    ap.add_argument("--busy", type=float, default=20.0, help="seconds of the busy process")
    ap.add_argument("--faces", type=int, default=20000, help="synthetic faces")
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fer-busy-"))
    data = base / "d.safetensors"
    subprocess.run([sys.executable, "-m", "fercli", "-q", "prep", "--synthetic", str(a.faces), "-o", str(data)],
                   check=True)  # fmt: skip
    quiet = run(data, base, "quiet", a.time, 0)
    busy = run(data, base, "busy", a.time, a.busy)
    from fercli.hardware import cpu_name

    print(f"undisturbed   {quiet['steps']:6d} steps in {quiet['seconds']:6.1f} s")
    print(f"busy {a.busy:.0f} s first {busy['steps']:6d} steps in {busy['seconds']:6.1f} s")
    print(f"ratio of steps {busy['steps'] / quiet['steps']:.3f} (goal >= 0.9); {cpu_name()}, budget {a.time}")


if __name__ == "__main__":
    main()
