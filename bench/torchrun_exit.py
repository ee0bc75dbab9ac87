"""How often a finished 2-process gloo job aborts at exit, ending as plain Python does vs as `fer` does.

Each job is torchrun with two CPU ranks that do what the end of `fer train` does: a few DDP
steps, an all-reduce, a broadcast, the network released, a barrier, destroy_process_group. Arm
"python" then returns from the script (interpreter shutdown); arm "fer" ends through
`fercli.cli._exit(0)`. An aborted job is one where a rank died by SIGABRT ("terminate called without
an active exception"): gloo's worker thread was still releasing the barrier's tensors when the
interpreter shut down (pytorch/pytorch#179291).

Run: python bench/torchrun_exit.py [JOBS_PER_ARM]   (default 20; about 6 s per job on 2 cores)

Measured 2026-11-27, 2-core CPU machine, torch 2.14.1, `python bench/torchrun_exit.py 30`:
python 2 of 30 jobs aborted, fer 0 of 30 (this job's earlier form, same machine: 4 of 46 against 0 of 84).
"""

from __future__ import annotations

import os
import subprocess
import sys


def rank_body() -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    dist.init_process_group("gloo")
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 46 * 46, 7))
    ddp = nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    for _ in range(5):
        loss = ddp(torch.randn(16, 1, 48, 48)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    dist.all_reduce(torch.ones(3, dtype=torch.float64))
    for b in net.buffers():
        dist.broadcast(b, src=0)
    del ddp, opt  # as when fer's training function returns
    dist.barrier()
    dist.destroy_process_group()
    if os.environ["EXIT_ARM"] == "fer":
        from fercli.cli import _exit

        _exit(0)


def one_job(arm: str) -> bool:
    """True when the job aborted."""
    env = {**os.environ, "EXIT_ARM": arm, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, "--rank"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if r.returncode and "SIGABRT" not in r.stderr:
        sys.exit(f"job failed for another reason:\n{r.stderr[-3000:]}")
    return r.returncode != 0


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    aborted = {"python": 0, "fer": 0}
    for i in range(jobs):
        for arm in aborted:  # interleaved, so both arms see the same machine load
            aborted[arm] += one_job(arm)
        print(f"\r{i + 1}/{jobs} jobs per arm", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"{'exit':<8} {'jobs':>5} {'aborted':>8}")
    for arm, n in aborted.items():
        print(f"{arm:<8} {jobs:>5} {n:>8}")


if __name__ == "__main__":
    rank_body() if "--rank" in sys.argv else main()
