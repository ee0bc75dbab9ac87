"""Training throughput per network and precision on this CPU: images/s and achieved GFLOP/s against the
CPU's fp32 peak.

    python bench/throughput.py [--nets vgg4s vgg4c vgg4] [--batch 64] [--steps 20]

Each setting is a fresh child process (forward, backward and SGD step on random faces, channels_last,
after 3 warm-up steps; the precisions are fp32 and, where the CPU has native bf16, bf16 autocast).
A training step costs about 3x the forward FLOPs (models.count_flops: forward and two backward passes).
The peak is cores x GHz x 64 fp32 FLOP per cycle (two AVX-512 FMA units x 16 lanes x 2), an assumption
printed with the figures: a CPU with one FMA unit per core peaks at half of it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

CHILD = r"""
import json, sys, time
import torch, torch.nn.functional as F
from fercli import models
name, batch, steps, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
net = models.create(name).to(memory_format=torch.channels_last)
flops = models.count_flops(net)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(batch, 1, 48, 48).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 7, (batch,))
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        loss = F.cross_entropy(net(x).float(), y)
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(3):
    step()
t = time.perf_counter()
for _ in range(steps):
    step()
ips = batch * steps / (time.perf_counter() - t)
print(json.dumps({"images_per_s": ips, "gflop_per_image": 3 * flops / 1e9, "threads": torch.get_num_threads()}))
"""


def cpu_peak() -> tuple[str, float, int]:
    from fercli.engine.threads import usable_cpus
    from fercli.hardware import cpu_name

    name = cpu_name()
    ghz = re.search(r"@\s*([\d.]+)\s*GHz", name)
    return name, float(ghz.group(1)) if ghz else float("nan"), usable_cpus()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", nargs="+", default=["vgg4s", "vgg4c", "vgg4"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    from fercli.engine.device import _bf16_native

    name, ghz, cores = cpu_peak()
    peak = cores * ghz * 64
    precisions = ["fp32"] + (["bf16"] if _bf16_native() else [])
    print(f"{name}; {cores} cores at {ghz} GHz: fp32 peak {peak:.0f} GFLOP/s (2 FMA units x 16 lanes x 2 assumed)")
    rows = []
    for net in a.nets:
        for p in precisions:
            out = subprocess.run([sys.executable, "-c", CHILD, net, str(a.batch), str(a.steps), p],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            r = json.loads(out.stdout)
            gflops = r["images_per_s"] * r["gflop_per_image"]
            rows.append({"net": net, "precision": p, **r, "gflop_per_s": gflops, "of_peak": gflops / peak})
            print(f"{net:8s} {p:5s} {r['images_per_s']:8.0f} images/s  {r['gflop_per_image']:.3f} GFLOP per image "
                  f"(training)  {gflops:6.0f} GFLOP/s  {100 * gflops / peak:5.1f}% of the fp32 peak")  # fmt: skip
    print(json.dumps({"cpu": name, "cores": cores, "ghz": ghz, "peak_gflop_per_s": peak, "rows": rows}))


if __name__ == "__main__":
    main()
