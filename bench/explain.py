"""Seconds per face of each saliency method and of `fer ascent`, for the default networks.

Run: python bench/explain.py [--arch vgg4s vgg4 vgg5] [--faces 4] [--device auto]
Untrained weights: the cost of a map does not depend on what the network has learned.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fercli import models
from fercli.classes import CLASSES
from fercli.data.synthetic import synthetic_faces
from fercli.explain.ascent import ascend
from fercli.explain.saliency import METHODS, explain
from fercli.hardware import pick_device
from fercli.infer.model import FerModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", nargs="+", default=["vgg4s", "vgg4", "vgg5"])
    ap.add_argument("--faces", type=int, default=4)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    dev = pick_device(a.device, announce=False)
    imgs, labels = synthetic_faces(a.faces)
    meta = {"normalize": {"mean": 0.5, "std": 0.25}, "classes": list(CLASSES)}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device {name}; {a.faces} faces per call; seconds per face")
    print(f"{'network':8s} " + " ".join(f"{m:>11s}" for m in METHODS) + f" {'ascent/200':>11s}")
    for arch in a.arch:
        torch.manual_seed(0)
        net = models.create(arch).to(dev).eval()
        model = FerModel(net, meta, dev, "none", Path(arch))  # untrained weights: the timing is the same
        times = []
        for m in METHODS:
            t0 = time.perf_counter()
            explain(model, imgs, labels, [m], "pred")
            times.append((time.perf_counter() - t0) / a.faces)
        t0 = time.perf_counter()
        ascend(model, "-1", list(range(a.faces)), steps=200)
        times.append((time.perf_counter() - t0) / a.faces)
        print(f"{arch:8s} " + " ".join(f"{t:11.3f}" for t in times))


if __name__ == "__main__":
    main()
