"""Start-up time of `fer --help` and `fer prep --help` (target < 0.5 s), and proof that torch stays unloaded.

Run: python bench/startup.py
"""

from __future__ import annotations

import subprocess
import sys
import time


def best_of(args: list[str], n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    base = best_of([sys.executable, "-c", "pass"])
    for cmd in (["--help"], ["prep", "--help"], ["train", "--help"]):
        t = best_of([sys.executable, "-m", "fercli", *cmd])
        print(f"fer {' '.join(cmd):<14} {t:.3f} s   (bare python {base:.3f} s)")
    probe = "import sys; from fercli import cli; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    print(f"torch imported by the CLI module: {out[0]}; numpy: {out[1]}")


if __name__ == "__main__":
    main()
