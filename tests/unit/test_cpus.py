"""dalston.runtimes.cpus: the CPUs an engine may use, from its affinity mask and its cgroup v2 quota."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dalston.runtimes.cpus import available_cpus, quota_cpus


@pytest.mark.parametrize("content,expected", [
    ("max 100000\n", None),          # no quota
    ("150000 100000\n", 2),          # 1.5 CPUs -> 2 threads (rounded up: never fewer threads than CPUs' worth)
    ("50000 100000\n", 1),           # half a CPU -> 1
    ("400000 100000\n", 4),
    ("garbage\n", None),
    ("100000 0\n", None),
])
def test_quota_cpus_reads_cgroup_v2_cpu_max(tmp_path: Path, content: str, expected: int | None) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(content)
    assert quota_cpus(cpu_max) == expected


def test_no_cgroup_file_means_no_quota(tmp_path: Path) -> None:
    assert quota_cpus(tmp_path / "absent") is None
    assert available_cpus(tmp_path / "absent") == len(os.sched_getaffinity(0))


def test_quota_caps_the_affinity_mask(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")
    assert available_cpus(cpu_max) == 1


def test_a_pinned_process_counts_its_mask_not_the_machine() -> None:
    """A real process pinned to one core (as `taskset` or Kubernetes' static CPU manager does)."""
    first = min(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", "from dalston.runtimes.cpus import available_cpus; print(available_cpus())"],
                         capture_output=True, text=True, check=True, preexec_fn=lambda: os.sched_setaffinity(0, {first}),
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.stdout.strip() == "1", out
