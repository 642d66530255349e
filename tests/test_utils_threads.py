"""PyTorch's thread count set to the cores this process may use: affinity, cgroup quota, the
user's OMP_NUM_THREADS, torchrun's ranks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import corrflow.utils.threads as threads


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_available_cores_is_the_affinity_capped_by_the_quota(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert threads.available_cores() == 64
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)  # docker --cpus 1.5
    assert threads.available_cores() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})  # taskset -c 3
    assert threads.available_cores() == 1


def test_cgroup_v2_quota_is_read(monkeypatch, tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    real = Path

    def fake_path(p, *a):
        return real(cpu_max) if str(p) == "/sys/fs/cgroup/cpu.max" else real(tmp_path / "absent")

    monkeypatch.setattr(threads, "Path", fake_path)
    cpu_max.write_text("250000 100000\n")
    assert threads._cgroup_quota() == 2.5
    cpu_max.write_text("max 100000\n")
    assert threads._cgroup_quota() is None


def test_set_threads_auto_shares_the_cores_between_ranks(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    assert threads.set_threads("auto") == 8 and torch.get_num_threads() == 8
    assert threads.set_threads(None, ranks=4) == 2 and torch.get_num_threads() == 2
    assert threads.set_threads("auto", ranks=16) == 1


def test_set_threads_leaves_an_explicit_choice_alone(monkeypatch) -> None:
    torch.set_num_threads(3)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.set_threads("auto") == 0 and torch.get_num_threads() == 3
    assert threads.set_threads(0) == 0 and torch.get_num_threads() == 3
    assert threads.set_threads(2) == 2 and torch.get_num_threads() == 2  # a count given in the config wins
    with pytest.raises(ValueError, match="threads"):
        threads.set_threads(-1)
