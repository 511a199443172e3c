"""How many CPUs this process may really use: its affinity mask, capped by a cgroup v2 CPU quota.

WHY: CTranslate2's default thread count (`cpu_threads=0`) ignores both. An engine pinned to one core
(`taskset`, Kubernetes' static CPU manager) or limited to one CPU by its container quota then runs
more threads than it has cores, and they preempt each other: measured with whisper-base on one pinned
core, an 88 s clip took 6.2-7.2 s with the default and 4.6 s with one thread, and two concurrent
decodes 11-12 s against 8.9-9.9 s (docs/PERFORMANCE.md, "CPU threads"). With no pinning and no
quota the answer is the machine's CPU count, the same as the default.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def quota_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """CPUs allowed by a cgroup v2 quota (`cpu.max`: "<quota> <period>" or "max <period>"), rounded up."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs in this process's affinity mask, capped by its cgroup quota; at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quota = quota_cpus(cpu_max)
    return max(1, min(count, quota) if quota is not None else count)
