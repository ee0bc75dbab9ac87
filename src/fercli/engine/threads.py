"""CPU threads: how many, and how they wait. Set before torch loads (OpenMP reads it once).

torch's default is one OpenMP thread per core, spinning while it waits for work. When anything else
runs on a small machine those spinning threads fight it for the cores and everything crawls. Measured
on this project's 2-core machine with `python bench/threads.py` (vgg4s training, images/s):

| machine | torch defaults | OMP_WAIT_POLICY=PASSIVE | GOMP_SPINCOUNT=10000 | 1 thread, passive |
|---|---|---|---|---|
| idle | 801 | 762 (x0.95) | 833 (x1.04) | 434 (x0.54) |
| one other busy process | 288 | 428 (x1.49) | 350 (x1.22) | 444 (x1.54) |

(2026-11-28; two runs of the same idle setting differ by up to 7%.)
So fer
- uses as many threads as CPUs this process may really use: its affinity mask and its cgroup CPU quota
  (a container limited to 1.5 CPUs gets 1), unless `--threads` or FER_THREADS says otherwise;
- lets OpenMP threads sleep when idle (PASSIVE) when other processes are running as it starts and one
  of them is a lasting job (busy at least half a core for at least LASTING_S seconds), and keeps the spinning
  default otherwise: on an idle machine sleeping costs 5% (the EPYC) to 15-35% (a Xeon of this
  project's kind, 2026-12-01), and OpenMP reads the policy once, so a busy start that soon ends would
  pay that for the whole run. `python bench/busy_start.py` on that Xeon (a 2-thread busy process for
  the first 20 s of a 3-minute run): the busy run trained 0.64 of the undisturbed run's steps when the
  busy start chose PASSIVE, 1.00 when both spun;
- leaves any OMP_WAIT_POLICY, GOMP_SPINCOUNT or OMP_NUM_THREADS the user set alone.
This module imports nothing heavy: `fer --help` stays instant.
"""

from __future__ import annotations

import math
import os
import sys

from fercli.errors import USAGE, FerError


def cgroup_cpu_limit() -> float | None:
    """The CPU quota of this process's cgroup (v2 cpu.max, else v1 cfs files), in CPUs; None if unlimited."""
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
        period_us = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """CPUs this process may run on: the affinity mask, capped by the cgroup quota (at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.floor(limit)))
    return max(1, n)


def others_running(samples: int = 3) -> bool:
    """Whether other processes are runnable now: /proc/loadavg's running count, less this process, in
    the majority of a few samples 10 ms apart (the 1-minute load average lags a finished job by minutes)."""
    import time

    counts = []
    for i in range(samples):
        try:
            running = int(open("/proc/loadavg").read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return False
        counts.append(running - 1)
        if i + 1 < samples:
            time.sleep(0.01)
    return sorted(counts)[len(counts) // 2] >= 1


# Another process counts as a lasting job when it has lived this long and used at least half a core on
# average over its life: a test suite or a training run, not an editor that woke up or a job that has
# just begun (and may end in seconds). Not the load average: a run of fer that just ended still weighs
# in it for a minute.
LASTING_S = 30.0


def load_sustained() -> bool:
    """Whether a process other than this one has kept half a core or more busy for LASTING_S seconds or
    longer (from /proc: its age and its user + system CPU time); False where /proc cannot tell."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        uptime = float(open("/proc/uptime").read().split()[0])
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except (OSError, ValueError):
        return False
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15 of stat)
            age = uptime - int(fields[19]) / ticks  # starttime (field 22)
        except (OSError, ValueError, IndexError):
            continue
        if age >= LASTING_S and cpu >= 0.5 * age:
            return True
    return False


def configure(threads: int | None = None) -> int:
    """Set the thread count and wait policy for torch (call before it is imported); return the count.

    Order of precedence: `threads` (--threads), FER_THREADS, OMP_NUM_THREADS as the user set it, then
    usable_cpus()."""
    given_by = "--threads"
    if threads is None and os.environ.get("FER_THREADS"):
        given_by = "FER_THREADS"
        try:
            threads = int(os.environ["FER_THREADS"])
        except ValueError as e:
            raise FerError(f"FER_THREADS must be a whole number, got '{os.environ['FER_THREADS']}'", USAGE) from e
    if threads is not None and threads < 1:
        raise FerError(f"{given_by} must be at least 1, got {threads}", USAGE)
    # The wait policy is read once, when torch's OpenMP starts: sampling the load is no use after that.
    policy_open = "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ
    if policy_open and "GOMP_SPINCOUNT" not in os.environ and others_running() and load_sustained():
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    if threads is None:
        given = os.environ.get("OMP_NUM_THREADS", "").strip()
        threads = int(given) if given.isdigit() and int(given) > 0 else usable_cpus()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)

    if "torch" in sys.modules:  # already loaded (tests, `python -c`): the count still applies
        sys.modules["torch"].set_num_threads(threads)
    return threads
