"""`fer predict` throughput against a bare loop of the same model's forward passes, in one run.

Input: the 3,589-row test.csv written by ../shared/data/fer2013/to_csv.py (FER_CSV_DIR reuses one).
The model weights are freshly initialised: throughput does not depend on what a network has learned.
Prints images/s of predict (reading, parsing, batching, forward, writing CSV), the time to its first
output row, images/s of the bare forward loop on already-decoded tensors, and their ratio. The bare
loop runs twice: forwarding as predict does (on a CPU, CPU_FORWARD faces a pass), and each whole batch
in one pass, the baseline that CPU_FORWARD is measured against (ratio "chunked"). `--tta`
averages each face over the views of that mode in both (flip: 2 forward passes a face, as the built-in
model predicts by default; crops: 10, `--tta-crops`).

Run: python bench/predict.py [--arch vgg5 vgg4s] [--rows N] [--tta none|flip|crops] [--device auto]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fercli import console, models
from fercli.classes import CLASSES
from fercli.data.csvfaces import read_csv
from fercli.defaults import CPU_FORWARD
from fercli.files.checkpoint import save_checkpoint
from fercli.hardware import pick_device
from fercli.infer.inference import normalize, view_mean_probs
from fercli.infer.model import FerModel
from fercli.infer.predict import predict_stream

from _common import fer2013_csvs


class FirstRowClock(io.StringIO):
    """Records when the first data row (after the header) is written."""

    def __init__(self, t0: float) -> None:
        super().__init__()
        self.t0, self.first, self.writes = t0, None, 0

    def write(self, s: str) -> int:
        self.writes += 1
        if self.writes == 2 and self.first is None:
            self.first = time.perf_counter() - self.t0
        return super().write(s)


def make_checkpoint(arch: str, path: Path) -> None:
    torch.manual_seed(0)
    net = models.create(arch)
    meta = {"arch": arch, "arch_args": {}, "classes": list(CLASSES), "image_size": 48,
            "normalize": {"mean": 0.5, "std": 0.25}}  # fmt: skip
    save_checkpoint(path, net.state_dict(), meta)


@torch.no_grad()
def bare_loop(arch: str, images: np.ndarray, batch: int, dev: torch.device, tta: str, step: int) -> float:
    """images/s of normalise + views + forward + copy back, `step` faces a forward pass."""
    torch.manual_seed(0)
    net = models.create(arch).to(dev, memory_format=torch.channels_last).eval()
    x_all = torch.from_numpy(images)
    t0 = time.perf_counter()
    for i in range(0, len(x_all), batch):
        x = normalize(x_all[i : i + batch].to(dev), 0.5, 0.25)
        view_mean_probs(net, x, tta, step).cpu()  # sync, as predict's copy back
    return len(x_all) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", nargs="+", default=["vgg4s", "vgg5"])
    ap.add_argument("--rows", type=int, default=0, help="use only the first N rows (0 = all)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tta", default="none", choices=["none", "flip", "crops"])
    a = ap.parse_args()
    console.reset(quiet=True)
    csv = fer2013_csvs() / "test.csv"
    if a.rows:
        lines = csv.read_text().splitlines()[: a.rows + 1]
        csv = Path(tempfile.mkdtemp()) / "test.csv"
        csv.write_text("\n".join(lines) + "\n")
    chunks, _ = read_csv(str(csv))
    images = np.concatenate([c.images for c in chunks])
    dev = pick_device(a.device, announce=False)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device {name}; {len(images)} rows of {csv.name}; batch {a.batch}; tta {a.tta}; torch {torch.__version__}")
    for arch in a.arch:
        ckpt = Path(tempfile.mkdtemp()) / f"{arch}.safetensors"
        make_checkpoint(arch, ckpt)
        step = CPU_FORWARD if dev.type == "cpu" else a.batch  # as predict_probs forwards
        bare_loop(arch, images[: a.batch], a.batch, dev, a.tta, step)  # warm-up
        whole = bare_loop(arch, images, a.batch, dev, a.tta, a.batch)
        bare = bare_loop(arch, images, a.batch, dev, a.tta, step)
        t0 = time.perf_counter()
        out = FirstRowClock(t0)
        n = predict_stream(FerModel.load(ckpt, a.device, a.tta), [str(csv)], out, batch=a.batch)
        total = time.perf_counter() - t0
        assert n == len(images) and out.getvalue().count("\n") == n + 1
        ips = n / total
        print(f"{arch:8s} predict {ips:9,.0f} img/s  first row after {out.first:.3f} s  "
              f"bare forward {bare:9,.0f} img/s  ratio {ips / bare:.2f}  "
              f"one pass a batch {whole:9,.0f} img/s  chunked {bare / whole:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
