"""bench/gpu.sh, rehearsed on the CPU at tiny sizes (FER_GPU_SMOKE=1): the script the first GPU machine runs
must work there in one call, so its every path but CUDA itself is exercised here."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gpu_sh(out: Path, **env: str) -> subprocess.CompletedProcess:
    # python3 on the GPU machine is the one with torch; here, this interpreter's folder comes first.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    full = {**os.environ, "PATH": path, "OUT": str(out), "FER_GPU_SMOKE": "1", **env}
    return subprocess.run(["bash", "bench/gpu.sh"], cwd=ROOT, env=full, capture_output=True, text=True, timeout=600)


def _rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("check", "---"):
            rows[cells[0]] = cells[1:]
    return rows


def test_the_rehearsal_runs_every_check_and_leaves_only_the_table_and_the_logs(tmp_path):
    # --compile's CPU build takes minutes on 2 cores; tests/test_engine.py covers it through aot_eager.
    r = _gpu_sh(tmp_path / "out", CHECKS="bench study default fp16 resume inference ddp")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = _rows(r.stdout)
    assert list(rows) == ["prep", "bench", "study", "default", "fp16", "resume", "inference", "compile", "ddp"]
    for name in ("prep", "bench", "study", "default", "fp16", "resume", "inference", "ddp"):
        assert rows[name][0] == "ok", (name, rows[name])
    assert rows["compile"][0] == "not run (not in CHECKS)"
    assert "images/s" in rows["study"][2] and "test (PublicTest)" in rows["study"][2]
    assert "ratio" in rows["bench"][2]
    stopped, resumed = rows["resume"][2].split("resumed at ")
    assert "stopped at epoch 2 step" in stopped and "(exit 130)" in stopped
    assert resumed.startswith(stopped.split("stopped at ")[1].split(" (exit")[0])  # went on where it stopped
    assert "same class on 1" in rows["inference"][2]
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == ["gpu-logs.tar.gz", "table.md"]
    with tarfile.open(tmp_path / "out" / "gpu-logs.tar.gz") as t:
        names = t.getnames()
    assert "logs/study.out" in names and "status/ddp" in names and not any(n.endswith(".safetensors") for n in names)


def test_checks_past_the_limit_are_not_run_and_the_table_still_comes(tmp_path):
    r = _gpu_sh(tmp_path / "out", GPU_LIMIT_S="1")
    rows = _rows(r.stdout)
    assert r.returncode == 1 and rows["prep"][0].startswith("not run: its 60 s would pass the 1 s limit")
    assert (tmp_path / "out" / "table.md").read_text().strip() == r.stdout.strip()
