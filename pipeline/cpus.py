"""How many CPUs this process may use, for the stages' worker pools.

os.cpu_count() counts the host's CPUs. A container given 16 CPUs of a 128-CPU host (a GPU pod) sees 128 there,
and a pool that size would run 128 workers, each holding the language models, on 16 CPUs' worth of time. The
CPU affinity mask (taskset, cpuset) and the cgroup CPU quota (docker --cpus: v2 `cpu.max`, v1
`cpu.cfs_quota_us`) are what bound it; the smallest wins.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _quota(cgroup: Path) -> float | None:
    """CPUs' worth of time the cgroup quota allows, or None where no quota is set or readable."""
    try:
        v2 = cgroup / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):  # no cgroup file system (macOS, some sandboxes): no quota known
        return None


def usable_cpus(cgroup: Path = CGROUP) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _quota(cgroup)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus
