"""Does `fer audit` find the faces the FER+ crowd relabelled? One command, one JSON row.

    python bench/audit.py                       # trains a FER2013-label model with the cpu recipe for 5 minutes
    python bench/audit.py --time 19m
    python bench/audit.py --model runs/train/exp/best.safetensors

The model learns from the FER2013 labels only (`--labels fer2013`) and never sees a vote. Audit ranks the
faces of a split by how strongly the model disagrees with their FER2013 label (-log p(label), as `fer audit`
does); the crowd "relabelled" a face when its most voted of FER+'s 10 columns is not the FER2013 label's
emotion. For k = 100 and 500 the row gives the share of the top-k suspects the crowd relabelled, against
the share among all faces of the split (what k faces picked at random get). Two rankings: over the whole
split, and `fer audit`'s own (the top k/7 of each given class). Splits: train (the faces the model learned
from, which `fer audit` audits by default) and test (PublicTest, faces the model never saw). The data is
../shared's fer2013.csv.gz with fer2013new.csv, prepared with the holdout protocol as bench/accuracy.py does.
Run it on a quiet machine: one torch job at a time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from accuracy import git_commit, prepared

from _common import SHARED

KS = (100, 500)


def relabel_rates(probs: np.ndarray, labels: np.ndarray, relabelled: np.ndarray) -> dict[str, object]:
    from fercli.explain.audit import find_suspects, suspicion

    order = np.argsort(-suspicion(probs, labels), kind="stable")
    out: dict[str, object] = {"faces": int(len(labels)), "random": round(float(relabelled.mean()), 4)}
    for k in KS:
        out[f"top{k}"] = round(float(relabelled[order[:k]].mean()), 4)
        picked = np.array([r["i"] for r in find_suspects(probs, labels, k // 7)])  # fer audit --top k/7
        out[f"per_class_top{len(picked)}"] = round(float(relabelled[picked].mean()), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="a FER2013-label checkpoint trained on this data (default: train one)")
    ap.add_argument("--time", default="5m", help="training budget when no --model is given")
    args = ap.parse_args()
    sources = [SHARED / "fer2013.csv.gz", SHARED / "fer2013new.csv"]
    missing = [s for s in sources if not s.exists()]
    if missing:
        sys.exit(f"bench/audit.py needs the real data: {missing[0]} not found")

    import torch

    from fercli.data import crowd
    from fercli.data.prepared import PreparedData
    from fercli.hardware import cpu_name
    from fercli.infer.model import FerModel

    data_path = prepared(sources, 0.1, 0)
    ckpt = args.model
    train_s = None
    if ckpt is None:
        project = Path(tempfile.mkdtemp(prefix="fer-audit-"))
        cmd = [sys.executable, "-m", "fercli", "train", "--data", str(data_path), "--recipe", "cpu", "--labels",
               "fer2013", "--time", args.time, "--project", str(project), "--name", "audit"]  # fmt: skip
        print("+ fer " + " ".join(cmd[3:]), file=sys.stderr)
        t0 = time.perf_counter()
        if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode:
            sys.exit("fer train failed")
        train_s = round(time.perf_counter() - t0, 1)
        ckpt = project / "train" / "audit" / "best.safetensors"
    model = FerModel.load(ckpt, "auto")
    meta = model.meta
    if model.classes != crowd.CLASSES:
        sys.exit(f"{ckpt}: audit is measured with a model of the FER2013 labels (train with --labels fer2013)")
    d = PreparedData.open(data_path)
    result: dict[str, object] = {"model": str(ckpt), "train_s": train_s, "best_valid_acc": meta["best"]["valid_acc"]}
    for split in ("train", "test"):
        idx = d.indices(split, labeled_only=True)
        votes = np.asarray(d.votes[idx])
        idx, votes = idx[votes.sum(1) > 0], votes[votes.sum(1) > 0]
        labels = np.asarray(d.labels[idx])
        probs = model.probs(d.images[idx]).numpy()
        relabelled = votes.argmax(1) != crowd.VOTE_OF_FER2013[labels]
        result[split] = relabel_rates(probs, labels, relabelled)
    result.update({"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "commit": git_commit(), "date": time.strftime("%Y-%m-%d")})  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
