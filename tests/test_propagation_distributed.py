"""Many processes: the frame-balanced shares, and two CPU ranks (torchrun, gloo) writing the same
predictions, bit for bit, as one process, scored once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from corrflow.propagation.distributed import shard_by_frames
from tests.test_data_davis import make_davis_tree

REPO = Path(__file__).resolve().parents[1]


def test_shares_are_balanced_by_frame_count_and_cover_every_video_once() -> None:
    lengths = [50, 10, 40, 30, 20, 60, 5]
    shares = shard_by_frames(lengths, 3)
    assert sorted(i for s in shares for i in s) == list(range(7))
    loads = [sum(lengths[i] for i in s) for s in shares]
    # Longest first to the least-loaded rank (by hand): 60, 50, 40 open the ranks; 30 -> rank 2 (70),
    # 20 -> rank 1 (70), 10 -> rank 0 (70), 5 -> rank 0 (the lowest of three equal loads).
    assert shares == [[1, 5, 6], [0, 4], [2, 3]] and loads == [75, 70, 70]
    assert all(s == sorted(s) for s in shares)
    assert shard_by_frames(lengths, 1) == [list(range(7))]
    assert shard_by_frames([3], 2) == [[0], []]  # more ranks than videos: a rank may have none


def _run(out: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    cmd = [sys.executable, str(REPO / "tools" / "propagate.py"), "task=davis", f"data.root={root}", f"output_dir={out}",
           "features=random", "protocol=crw", "progress=false", "overlay=null", f"hydra.run.dir={out}/hydra", *extra]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_cpu_ranks_write_the_same_predictions_as_one_process(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "DAVIS", {"squares-a": 6, "squares-b": 5, "squares-c": 4})
    one = _run(tmp_path / "one", root)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run(tmp_path / "two", root, "launcher=torchrun", "nproc_per_node=2")
    assert two.returncode == 0, two.stderr[-3000:]
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "results").rglob("*.png"))
    assert len(files) == 15
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two" / "results").rglob("*.png"))
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    # Scored once, by rank 0, over every video; the same scores.
    assert two.stdout.count("J&F-Mean") == 1
    assert (tmp_path / "one" / "scores" / "global_results-val.csv").read_text() == (
        tmp_path / "two" / "scores" / "global_results-val.csv"
    ).read_text()
    # Resume per video: a second two-rank run skips everything.
    again = _run(tmp_path / "two", root, "launcher=torchrun", "nproc_per_node=2")
    assert again.returncode == 0 and "3 videos (3 finished earlier)" in again.stderr + again.stdout


@pytest.mark.slow
def test_a_rank_that_dies_leaves_its_finished_videos_for_the_resumed_run(tmp_path: Path) -> None:
    """Shares by frame count: rank 0 gets squares-a (6 frames), rank 1 squares-b then squares-c.
    A frame of squares-c that cannot be read kills rank 1 after it finished squares-b (annotations are
    checked up front, frames only when propagated); the resumed run keeps squares-b and does the rest."""
    root = make_davis_tree(tmp_path / "DAVIS", {"squares-a": 6, "squares-b": 5, "squares-c": 4})
    assert shard_by_frames([6, 5, 4], 2) == [[0], [1, 2]]
    bad = root / "JPEGImages" / "480p" / "squares-c" / "00002.png"
    good = bad.read_bytes()
    bad.write_bytes(b"not an image")
    out = tmp_path / "two"
    failed = _run(out, root, "launcher=torchrun", "nproc_per_node=2")
    assert failed.returncode == 1 and "00002.png: cannot read frame" in failed.stderr
    done_b = (out / "results" / "squares-b.done").read_text()
    assert not (out / "results" / "squares-c.done").exists()
    bad.write_bytes(good)
    again = _run(out, root, "launcher=torchrun", "nproc_per_node=2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "squares-b: finished in an earlier run, skipped" in again.stdout + again.stderr
    assert (out / "results" / "squares-b.done").read_text() == done_b and (out / "results" / "squares-c.done").is_file()


@pytest.mark.gpu
@pytest.mark.slow
def test_two_cuda_ranks_over_nccl_write_what_one_cuda_process_writes(tmp_path: Path) -> None:
    """nccl: one GPU a rank (so it needs two; with one GPU the ranks would share it over gloo)."""
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip(f"nccl needs a GPU a rank: {torch.cuda.device_count()} CUDA device(s) here, 2 needed")
    root = make_davis_tree(tmp_path / "DAVIS", {"squares-a": 6, "squares-b": 5, "squares-c": 4})
    one = _run(tmp_path / "one", root, "device=cuda")
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run(tmp_path / "two", root, "device=cuda", "launcher=torchrun", "nproc_per_node=2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "nccl" in two.stdout + two.stderr
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "results").rglob("*.png"))
    assert len(files) == 15
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
