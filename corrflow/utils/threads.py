"""How many CPU threads PyTorch should use: the cores this process may actually run on.

PyTorch's default is the machine's core count, which in a container limited by a CPU quota
(``docker --cpus 2`` on a 64-core host) or a CPU set means many more threads than cores, each
waiting for the others: the affinities then run several times slower than with the right count.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

__all__ = ["available_cores", "set_threads"]


def _cgroup_quota() -> float | None:
    """Cores allowed by the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cores() -> int:
    """The CPUs this process may run on (its affinity), capped by the cgroup quota (rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def set_threads(threads: int | str | None = None, *, ranks: int = 1) -> int:
    """Set PyTorch's intra-op threads; return the number set (0: left as PyTorch chose).

    Args:
        threads: a count; ``None`` or ``'auto'``: :func:`available_cores` shared by the ``ranks``
            processes of this machine; 0: leave PyTorch's own choice (and ``OMP_NUM_THREADS``).
        ranks: processes sharing this machine's cores (torchrun's local world size).
    """
    if threads in (None, "auto"):
        if os.environ.get("OMP_NUM_THREADS"):  # the user's explicit choice wins over ours
            return 0
        n = max(1, available_cores() // max(1, ranks))
    else:
        n = int(threads)
        if n < 0:
            raise ValueError(f"threads must be >= 0, None or 'auto', got {threads!r}")
        if n == 0:
            return 0
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
