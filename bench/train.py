"""Training throughput of the fercli engine against the study-style plain PyTorch loop, in one run.

Plain loop: DataLoader over a TensorDataset, fp32, per-batch normalisation, Adam (the study's code).
Engine: fercli.engine.train with the data resident on the device, augmentation on the device, channels_last,
and the precision device.training_dtype picks (bf16 on CUDA; on a CPU the faster by a cached probe).
Same network, same data, same batch. Images/s are from the last epoch of each (the first warms caches
and, on CUDA, cuDNN autotuning).

Run: python bench/train.py [--arch vgg4s] [--batch 128] [--n 4096] [--epochs 2] [--device auto]
     python bench/train.py --arch vgg5 --batch 512 --n 28709     (the H100 reference comparison)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from fercli import console, models
from fercli.data.prep import prepare
from fercli.data.prepared import PreparedData
from fercli.engine.recipe import NO_AUGMENT, build_recipe
from fercli.engine.train import RunSettings, train
from fercli.hardware import pick_device, tune_for_training


def plain_loop(arch: str, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, dev: torch.device) -> float:
    torch.manual_seed(0)
    model = models.create(arch).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=0.002)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, drop_last=True)
    ips = 0.0
    for _ in range(epochs):
        t0, seen = time.perf_counter(), 0
        model.train()
        for xb, yb in loader:
            xb = xb.to(dev).float().unsqueeze(1) / 255.0
            xb = (xb - xb.mean()) / xb.std()  # per-batch normalisation, as the study did
            yb = yb.to(dev)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(yb)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ips = seen / (time.perf_counter() - t0)
    return ips


def engine(arch: str, data: Path, batch: int, epochs: int, dev: str, augment: bool, project: str) -> float:
    over = {"arch": arch, "batch": batch, "epochs": epochs, "tta": False}
    if not augment:
        over.update(NO_AUGMENT)
    out = train(build_recipe("default", over), RunSettings(data=str(data), device=dev, project=project, progress=False))
    last = out["history"][-1]
    # Train-only throughput: the engine's own epoch timer also covers validation, so take it out.
    return last["images_per_s"] * last["seconds"] / max(1e-9, last["seconds"] - last.get("valid_seconds", 0.0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="vgg4s")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--n", type=int, default=4096, help="synthetic training faces")
    ap.add_argument("--data", help="a prepared file to use instead of synthetic faces")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    console.reset(quiet=True)
    tmp = tempfile.mkdtemp()
    data = Path(a.data) if a.data else Path(tmp) / "d.safetensors"
    if not a.data:
        prepare([], str(data), synthetic=a.n, val_frac=0.02)
    dev = pick_device(a.device, announce=False)
    d = PreparedData.open(data)
    tr = d.indices("train", labeled_only=True)
    x, y = torch.from_numpy(d.images[tr].copy()), torch.from_numpy(d.labels[tr].copy())

    tune_for_training(dev)  # the plain loop gets cuDNN autotuning and TF32 too: only the engine's own work differs
    plain = plain_loop(a.arch, x, y, a.batch, a.epochs, dev)
    fast = engine(a.arch, data, a.batch, a.epochs, a.device, False, tmp + "/runs")
    fast_aug = engine(a.arch, data, a.batch, a.epochs, a.device, True, tmp + "/runs")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device {name}; {a.arch}, batch {a.batch}, {len(tr)} faces, torch {torch.__version__}")
    print(f"plain loop (DataLoader, fp32, Adam)     {plain:10,.0f} images/s")
    print(f"engine, no augmentation                 {fast:10,.0f} images/s   ratio {fast / plain:.2f}")
    print(f"engine, augmentation on the device      {fast_aug:10,.0f} images/s   ratio {fast_aug / plain:.2f}")


if __name__ == "__main__":
    main()
