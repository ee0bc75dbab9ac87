"""The table bench/gpu.sh prints at its exit: one row per check, with its figures or what became of it.

    python3 bench/gpu_table.py WORK     (WORK: gpu.sh's temporary folder: status/, logs/)
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import sys
from pathlib import Path


def _text(p: Path, default: str = "") -> str:
    try:
        return p.read_text().strip()
    except OSError:
        return default


def _epochs(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "valid_acc" in row:
            rows.append(row)
    return rows


def _speed(rows: list[dict]) -> str:
    """Training images/s: the median epoch after the first (which builds kernels), else the first."""
    ips = [r["images_per_s"] for r in rows if "images_per_s" in r]
    return f"{statistics.median(ips[1:] or ips):,.0f} images/s" if ips else "no images/s"


def _run(logs: Path, name: str) -> str:
    rows = _epochs(_text(logs / f"{name}.out"))
    if not rows:
        return "no epochs reported"
    said = f"{len(rows)} epochs, {_speed(rows)}, best valid_acc {100 * max(r['valid_acc'] for r in rows):.2f}%"
    ev = _text(logs / f"{name}.eval.json")
    if ev:
        said += f", test (PublicTest) {100 * json.loads(ev)['accuracy']:.2f}%"
    return said


def _resume(logs: Path) -> str:
    log, out = _text(logs / "resume.log"), _text(logs / "resume.out")
    stopped = re.search(r"interrupted at epoch (\d+) step (\d+)", log)
    resumed = re.search(r"resuming \S+ at epoch (\d+) step (\d+)", log)
    code = re.search(r"interrupted: exit (\d+)", out)
    if not (stopped and resumed):
        return "no interruption seen: " + (log.splitlines() or ["-"])[-1]
    rows = _epochs(out)
    return (f"stopped at epoch {stopped[1]} step {stopped[2]} (exit {code[1] if code else '?'}), resumed at epoch "
            f"{resumed[1]} step {resumed[2]}; then {len(rows)} epochs reported, {_speed(rows[-1:])} on the last")


def _inference(logs: Path) -> str:
    with open(logs / "pred_cpu.csv") as f, open(logs / "pred_gpu.csv") as g:
        a, b = list(csv.reader(f)), list(csv.reader(g))
    same = sum(x[1] == y[1] for x, y in zip(a[1:], b[1:]))
    diff = max(abs(float(u) - float(v)) for x, y in zip(a[1:], b[1:]) for u, v in zip(x[2:], y[2:]))
    return f"same class on {same} of {len(a) - 1} faces; largest --probs difference {diff:.1e}"


def figures(work: Path, name: str) -> str:
    logs = work / "logs"
    if name == "bench":
        return "; ".join(line.strip() for line in _text(logs / "bench.out").splitlines()[1:]) or "no output"
    if name == "resume":
        return _resume(logs)
    if name == "inference":
        return _inference(logs)
    if name == "prep":
        return (_text(logs / "prep.log").splitlines() or ["prepared"])[-1]
    return _run(logs, name)


def main() -> None:
    work = Path(sys.argv[1])
    status = work / "status"
    print("\n| check | result | seconds | figures |\n|---|---|---|---|")
    for name in dict.fromkeys(_text(status / "order").split()):
        state = _text(status / name, "not run: the script stopped before it")
        said = ""
        if state == "ok":
            try:
                said = figures(work, name)
            except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
                said = f"figures unreadable ({type(e).__name__}: {e})"
        elif state.startswith(("failed", "timed out")):
            said = "last line: " + ((_text(work / "logs" / f"{name}.log").splitlines() or ["-"])[-1])[:200]
        print(f"| {name} | {state} | {_text(status / f'{name}.seconds', '-')} | {said} |")


if __name__ == "__main__":
    main()
