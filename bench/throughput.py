"""Training throughput per network and precision on this CPU: images/s and achieved GFLOP/s against the
CPU's fp32 peak.

    python bench/throughput.py [--nets vgg4s vgg4c vgg4] [--batch 64] [--steps 20] [--nchw] [--compile]
    python bench/throughput.py --units vgg4s     (each Conv-BN-ReLU unit of a network, timed alone)

Each setting is a fresh child process (forward, backward and SGD step on random faces, channels_last,
after 3 warm-up steps; the precisions are fp32 and, where the CPU has native bf16, bf16 autocast).
A training step costs about 3x the forward FLOPs (models.count_flops: forward and two backward passes).
The peak is cores x GHz x 2 FMA units x fp32 lanes x 2 FLOP per cycle, an assumption printed with the
figures: 16 lanes with AVX-512 (64 FLOP a cycle), 8 with AVX2 only (32); a CPU with one FMA unit per core
peaks at half of it. The GHz is the model name's "@ X GHz", else the kernel's "cpu MHz" (a virtual
machine's nominal clock, not its boost), else --ghz.
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
name, batch, steps, dtype, layout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
compiled = sys.argv[6] == "1"
fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
torch.manual_seed(0)
net = models.create(name).to(memory_format=fmt)
flops = models.count_flops(net)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
fn = torch.compile(net) if compiled else net
x = torch.randn(batch, 1, 48, 48).contiguous(memory_format=fmt)
y = torch.randint(0, 7, (batch,))
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        loss = F.cross_entropy(fn(x).float(), y)
    opt.zero_grad(); loss.backward(); opt.step()
t = time.perf_counter()
for _ in range(3):
    step()
warm_s = time.perf_counter() - t  # with --compile: the compilation
t = time.perf_counter()
for _ in range(steps):
    step()
ips = batch * steps / (time.perf_counter() - t)
print(json.dumps({"images_per_s": ips, "gflop_per_image": 3 * flops / 1e9, "threads": torch.get_num_threads(),
                  "warm_up_s": warm_s}))
"""

# Each 3x3 Conv-BN-ReLU unit of a network on its own input shape, forward and backward (fp32,
# channels_last): where a step's time goes, against each unit's share of the FLOPs.
UNITS = r"""
import json, sys, time
import torch
from torch import nn
from fercli import models
name, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
net = models.create(name)
shapes = []
hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m.in_channels, m.out_channels, o.shape[-1])))
         for m in net.modules() if isinstance(m, nn.Conv2d)]
net.eval()(torch.zeros(1, 1, 48, 48))
for h in hooks:
    h.remove()
rows = []
for cin, cout, side in shapes:
    unit = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
    unit = unit.to(memory_format=torch.channels_last)
    x = torch.randn(batch, cin, side, side).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(cin > 1)  # the first unit needs no input gradient, as in training
    for i in range(3 + steps):
        if i == 3:
            t = time.perf_counter()
        unit(x).sum().backward()
    ms = (time.perf_counter() - t) / steps * 1000
    gflop = 3 * 2 * batch * side * side * cout * cin * 9 / 1e9
    rows.append({"unit": f"{cin}->{cout} at {side} px", "ms": ms, "gflop_per_s": gflop / ms * 1000, "gflop": gflop})
print(json.dumps(rows))
"""


def cpu_peak(ghz_given: float | None) -> tuple[str, float, str, int, int]:
    """CPU name, GHz and where it came from, usable cores, fp32 lanes of its widest FMA vectors."""
    from fercli.engine.threads import usable_cpus
    from fercli.hardware import cpu_name, cpuinfo

    name, flags = cpu_name(), (cpuinfo() or ("", frozenset()))[1]
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    try:
        with open("/proc/cpuinfo") as f:  # the clock, which hardware.cpuinfo does not read
            mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", f.read(), re.M)
    except OSError:
        mhz = None
    named = re.search(r"@\s*([\d.]+)\s*GHz", name)
    if ghz_given:
        ghz, source = ghz_given, "--ghz"
    elif named:
        ghz, source = float(named.group(1)), "the model name"
    elif mhz:
        ghz, source = round(float(mhz.group(1)) / 1000, 2), "the kernel's cpu MHz"
    else:
        ghz, source = float("nan"), "unknown: give --ghz"
    return name, ghz, source, usable_cpus(), lanes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", nargs="+", default=["vgg4s", "vgg4c", "vgg4"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--nchw", action="store_true", help="the default memory layout instead of channels_last")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network (inductor on the CPU)")
    ap.add_argument("--units", metavar="NET", help="time each Conv-BN-ReLU unit of NET alone instead")
    ap.add_argument("--ghz", type=float, help="the clock the peak assumes, where the CPU's name gives none")
    a = ap.parse_args()
    if a.units:
        out = subprocess.run([sys.executable, "-c", UNITS, a.units, str(a.batch), str(a.steps)],
                             capture_output=True, text=True, check=True)  # fmt: skip
        rows = json.loads(out.stdout)
        total_ms, total_gflop = sum(r["ms"] for r in rows), sum(r["gflop"] for r in rows)
        for r in rows:
            print(f"{r['unit']:22s} {r['ms']:7.2f} ms ({100 * r['ms'] / total_ms:4.1f}% of the time, "
                  f"{100 * r['gflop'] / total_gflop:4.1f}% of the FLOPs)  {r['gflop_per_s']:6.1f} GFLOP/s")  # fmt: skip
        print(json.dumps({"net": a.units, "batch": a.batch, "units": rows}))
        return
    layout = "contiguous" if a.nchw else "channels_last"
    from fercli.engine.device import _bf16_native

    name, ghz, source, cores, lanes = cpu_peak(a.ghz)
    peak = cores * ghz * 2 * lanes * 2
    precisions = ["fp32"] + (["bf16"] if _bf16_native() else [])
    print(f"{name}; {cores} cores at {ghz} GHz ({source}): fp32 peak {peak:.0f} GFLOP/s "
          f"(2 FMA units x {lanes} lanes x 2 assumed)")
    rows = []
    for net in a.nets:
        for p in precisions:
            out = subprocess.run([sys.executable, "-c", CHILD, net, str(a.batch), str(a.steps), p, layout,
                                  "1" if a.compile else "0"],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            r = json.loads(out.stdout)
            gflops = r["images_per_s"] * r["gflop_per_image"]
            rows.append({"net": net, "precision": p, "layout": layout, "compile": a.compile, **r,
                         "gflop_per_s": gflops, "of_peak": gflops / peak})
            print(f"{net:8s} {p:5s} {r['images_per_s']:8.0f} images/s  {r['gflop_per_image']:.3f} GFLOP per image "
                  f"(training)  {gflops:6.0f} GFLOP/s  {100 * gflops / peak:5.1f}% of the fp32 peak")  # fmt: skip
    print(json.dumps({"cpu": name, "cores": cores, "ghz": ghz, "ghz_from": source, "fp32_lanes": lanes,
                      "peak_gflop_per_s": peak, "rows": rows}))  # fmt: skip


if __name__ == "__main__":
    main()
