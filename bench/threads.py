"""CPU thread policy on an idle and a busy machine: training images/s of vgg4s under torch's defaults
against fer's policy (OMP_WAIT_POLICY=PASSIVE, threads = usable CPUs), and with one thread.

    python bench/threads.py [--steps 30] [--hogs 1]

"Busy" runs `--hogs` single-threaded busy loops beside the measurement (another job on the box). Each
figure is a fresh child process, so the OpenMP settings take effect; ratios are against torch's
defaults on the same machine state, measured in this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
import torch, torch.nn.functional as F
from fercli import models
torch.manual_seed(0)
net = models.create("vgg4s").to(memory_format=torch.channels_last)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(128, 1, 48, 48).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 7, (128,))
def step():
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(3):
    step()
n = int(sys.argv[1]); t = time.perf_counter()
for _ in range(n):
    step()
print(json.dumps({"images_per_s": 128 * n / (time.perf_counter() - t), "threads": torch.get_num_threads()}))
"""


def measure(env_changes: dict[str, str | None], steps: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "FER_THREADS", "GOMP_SPINCOUNT"):
        env.pop(k, None)
    for k, v in env_changes.items():
        if v is not None:
            env[k] = v
    out = subprocess.run([sys.executable, "-c", CHILD, str(steps)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def fer_policy() -> dict[str, str]:
    """The environment fer's CLI sets before torch loads (threads.configure), computed the same way."""
    saved = dict(os.environ)
    try:
        for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "FER_THREADS", "GOMP_SPINCOUNT"):
            os.environ.pop(k, None)
        from fercli.engine.threads import configure

        configure()
        return {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT") if k in os.environ}
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--hogs", type=int, default=1, help="busy-loop processes beside the busy measurements")
    a = ap.parse_args()
    configs = {
        "torch defaults": {},
        "fer policy": {},  # computed in each machine state, as fer does at its start
        "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
        "spin 10k": {"GOMP_SPINCOUNT": "10000"},
        "spin 100k": {"GOMP_SPINCOUNT": "100000"},
        "1 thread, passive": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
    }
    rows = []
    for state in ("idle", "busy"):
        hogs = []
        if state == "busy":
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.hogs)]
            # Another job that has been running a while (fer's policy asks for LASTING_S seconds of it)
            from fercli.engine.threads import LASTING_S

            time.sleep(LASTING_S + 5)
        try:
            base = None
            configs["fer policy"] = fer_policy()
            for name, env in configs.items():
                r = measure(env, a.steps)
                base = base or r["images_per_s"]
                rows.append({"machine": state, "config": name, **r, "ratio": round(r["images_per_s"] / base, 2)})
                print(f"{state:5s} {name:18s} threads {r['threads']}  {r['images_per_s']:7.0f} images/s  "
                      f"x{rows[-1]['ratio']:.2f}", file=sys.stderr)  # fmt: skip
        finally:
            for h in hogs:
                h.kill()
    print(json.dumps({"cpus": os.cpu_count(), "hogs": a.hogs, "rows": rows}))


if __name__ == "__main__":
    main()
