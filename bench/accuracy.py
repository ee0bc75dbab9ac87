"""Accuracy on real FER2013, one command from the data to one JSON result row.

    python bench/accuracy.py --recipe cpu
    python bench/accuracy.py --recipe cpu --time 5m --arch vgg4s
    python bench/accuracy.py --recipe study --epochs 2 --data path/to/fer2013.csv
    python bench/accuracy.py --recipe cpu --ferplus                    (FER+ crowd labels)
    python bench/accuracy.py --recipe cpu --ferplus --labels probability

Every option after the known ones goes to `fer train` unchanged. The data (default: ../shared's
fer2013.csv.gz) is prepared once with the holdout protocol (val carved from Training, PublicTest kept
as test) and cached in .data/bench/; model selection (best epoch) sees only val, and the figure
reported is the best checkpoint on PublicTest, evaluated as `fer eval` does (the checkpoint's own TTA
setting), and again as `fer eval --tta-crops` does (test_acc_crops: 10 views a face). With --ferplus
the FER+ votes (fer2013new.csv beside --data) are prepared with it, `fer train` picks its targets from
them (--labels), and a FER+ model is scored as the FER+ paper reports: against the crowd's majority on
PublicTest faces that have a clear one. Run it on a quiet machine: one torch job at a time.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED

ROOT = Path(__file__).resolve().parents[1]


def prepared(sources: list[Path], val_frac: float, seed: int, dedup: bool = False) -> Path:
    """The prepared file for `sources`, made once per source version and kept in .data/bench/; `dedup`: the
    same split with the val and test copies of train faces dropped (`fer prep --dedup`)."""
    from fercli.data.prep import prepare

    stamp = "|".join(f"{s.resolve()}|{s.stat().st_size}|{s.stat().st_mtime_ns}" for s in sources)
    key = hashlib.sha256(f"{stamp}|{val_frac}|{seed}".encode()).hexdigest()
    name = "+".join(s.name.split(".")[0] for s in sources)
    out = ROOT / ".data" / "bench" / f"{name}-holdout{'-dedup' if dedup else ''}-{key[:10]}.safetensors"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        prepare([str(s) for s in sources], str(out), val_frac=val_frac, seed=seed, protocol="holdout", dedup=dedup)
    return out


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--data", type=Path, default=SHARED / "fer2013.csv.gz", help="any source `fer prep` reads")
    ap.add_argument("--val-frac", type=float, default=0.1)
    ap.add_argument("--ferplus", action="store_true", help="add the FER+ votes (fer2013new.csv beside --data)")
    ap.add_argument("--keep", type=Path, help="keep the run folder under this project folder (default: a temp one)")
    args, overrides = ap.parse_known_args()
    sources = [args.data] + ([args.data.parent / "fer2013new.csv"] if args.ferplus else [])
    missing = [s for s in sources if not s.exists()]
    if missing:
        sys.exit(f"bench/accuracy.py needs the real data: {missing[0]} not found")

    import torch

    from fercli.files.checkpoint import read_meta
    from fercli.hardware import cpu_name
    from fercli.infer.evaluate import evaluate
    from fercli.infer.model import FerModel
    from fercli.models import create

    data = prepared(sources, args.val_frac, 0)
    project = args.keep or Path(tempfile.mkdtemp(prefix="fer-accuracy-"))
    cmd = [sys.executable, "-m", "fercli", "train", "--data", str(data), "--recipe", args.recipe,
           "--project", str(project), "--name", "bench", *overrides]  # fmt: skip
    print("+ fer " + " ".join(cmd[3:]), file=sys.stderr)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    train_s = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"fer train failed with exit code {done.returncode}")
    runs = sorted((project / "train").glob("bench*"), key=lambda p: p.stat().st_mtime)
    run = runs[-1]
    ckpt = run / "best.safetensors"
    meta = read_meta(ckpt)
    model = FerModel.load(ckpt, "auto")
    test = evaluate(model, str(data), "test")
    crops = evaluate(FerModel.load(ckpt, "auto", "crops"), str(data), "test")
    # PublicTest less its copies of training faces (FER2013 holds them): the same split, deduplicated.
    dedup = evaluate(model, str(prepared(sources, args.val_frac, 0, dedup=True)), "test")
    run_args = json.loads((run / "args.json").read_text())
    with open(run / "metrics.csv") as f:
        history = list(csv.DictReader(f))
    model = create(meta["arch"], len(meta["classes"]), **meta.get("arch_args", {}))
    result = {
        "recipe": args.recipe,
        "overrides": overrides,
        "arch": meta["arch"],
        "arch_args": meta.get("arch_args", {}),
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": len(history),
        "total_steps": run_args.get("total_steps"),
        "precision": run_args.get("precision"),
        "train_command_s": round(train_s, 1),
        "whole_command_s": round(time.perf_counter() - t_start, 1),
        "best_valid_acc": meta["best"]["valid_acc"],
        "best_epoch": meta["best"]["epoch"],
        "test_split": "PublicTest",
        "labels": meta["recipe"].get("labels", "fer2013"),
        "test_scored_against": test["labels"],
        "test_faces": test["n"],
        "test_acc": round(test["accuracy"], 4),
        "test_macro_f1": round(test["macro_f1"], 4),
        "test_crowd_share": round(test["crowd"]["mean_share"], 4) if "crowd" in test else None,
        "test_tta": test["tta"],
        "test_acc_crops": round(crops["accuracy"], 4),
        "test_macro_f1_crops": round(crops["macro_f1"], 4),
        "test_faces_dedup": dedup["n"],
        "test_acc_dedup": round(dedup["accuracy"], 4),
        "device": "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "run_dir": str(run) if args.keep else None,
    }
    print(json.dumps(result))
    if not args.keep:
        shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
