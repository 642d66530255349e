"""Ordered video clips: the frame skip and its schedule, objects, unreadable samples."""

from __future__ import annotations

import logging
import random
from types import SimpleNamespace

import pytest
import torch

from corrflow.data.vos.annotated import annotated_videos
from corrflow.data.vos.clips import SampleReadError, VOSClipDataset
from corrflow.data.vos.datamodule import ScheduledSkipSampler, VOSClipDataModule, max_skip_at
from tests.helpers.vos_synthetic import write_davis_tree


@pytest.fixture
def davis(tmp_path):
    return write_davis_tree(tmp_path / "davis", {"long": 30, "short": 4})


def test_frame_skip_stays_within_the_maximum(davis):
    ds = VOSClipDataset(annotated_videos(davis, layout="davis"), size=(32, 32), max_objects=3)
    random.seed(0)
    for max_skip, allowed in ((0, {1}), (3, {1, 2, 3, 4})):
        seen = set()
        for _ in range(25):
            item = ds[(0, None, max_skip)]  # the 30-frame video (no draw seed: the worker's random state)
            idx = item["frame_index"].tolist()
            assert len(idx) == 3 and item["max_skip"] == max_skip
            seen |= {b - a for a, b in zip(idx, idx[1:])}
        assert seen == allowed
    # a video too short for the skip: the gaps shrink to fit, the order stays
    for _ in range(20):
        idx = ds[(1, None, 25)]["frame_index"].tolist()
        assert idx == sorted(idx) and len(set(idx)) == 3 and idx[-1] <= 3
    item = ds[0]  # a plain index: the dataset's own maximum
    assert item["frames"].shape == (3, 3, 32, 32) and item["masks"].shape == (3, 32, 32)
    assert 1 <= item["n_objects"] <= 2 and item["masks"][0].max() == item["n_objects"]


def test_max_skip_schedule_from_the_global_step():
    assert [max_skip_at(s, ramp_steps=100) for s in (0, 40, 100, 500)] == [0, 10, 25, 25]
    assert max_skip_at(5, start=2, end=4, ramp_steps=10) == 3


def test_sampler_reads_the_schedule_as_it_hands_out_indices(davis):
    dm = VOSClipDataModule(root=str(davis), layout="davis", size=(32, 32), batch_size=2, num_workers=0, pin_memory=False,
                           clips_per_video=3, max_skip={"start": 0, "end": 20, "ramp_steps": 4})  # fmt: skip
    dm.trainer = SimpleNamespace(global_step=0, current_epoch=0, num_training_batches=3, accumulate_grad_batches=1, world_size=1, global_rank=0)
    dm.setup("fit")
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, ScheduledSkipSampler) and len(sampler) == 6
    it = iter(sampler)
    assert next(it)[2] == 0
    dm.trainer.global_step = 2  # the schedule moves with the step, read as each key is handed out
    key = next(it)
    assert key[2] == 10 and dm.train_set[key]["max_skip"] == 10
    # a run resumed at step 2 of epoch 0 skips the two batches it trained: the rest of the same order
    full = [k[0] for k in ScheduledSkipSampler(dm.train_set, max_skip=lambda: 0, seed=0, batch_size=2)]
    rest = [k[0] for k in iter(sampler)]
    assert sorted(full) == [0, 1, 2, 3, 4, 5] and rest == full[4:]
    # the same key draws the same item
    a, b = dm.train_set[key], dm.train_set[key]
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["frame_index"], b["frame_index"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (2, 3, 3, 32, 32) and batch["max_skip"].tolist() == [10, 10]


def test_unreadable_samples_are_skipped_with_a_warning_and_counted(davis, caplog):
    for path in (davis / "JPEGImages" / "480p" / "short").iterdir():
        path.write_bytes(b"not an image")
    ds = VOSClipDataset(annotated_videos(davis, layout="davis"), size=(32, 32))
    random.seed(1)
    with caplog.at_level(logging.WARNING):
        item = ds[(1, None, 0)]
    assert item["skipped"] >= 1 and item["frames"].shape == (3, 3, 32, 32)
    assert "cannot read frame" in caplog.text and "short" in caplog.text
    only_bad = VOSClipDataset([v for v in annotated_videos(davis, layout="davis") if v.name == "short"], size=(32, 32))
    with pytest.raises(SampleReadError, match="no usable sample"):
        only_bad[0]


def test_video_datamodule_errors(davis, tmp_path):
    with pytest.raises(ValueError, match="layout must be 'davis' or 'youtube'"):
        VOSClipDataModule(root=str(davis), layout="salient")
    with pytest.raises(ValueError, match="max_skip takes start, end and ramp_steps"):
        VOSClipDataModule(root=str(davis), max_skip={"begin": 0})
    with pytest.raises(ValueError, match="no video has the 3 annotated frames"):
        VOSClipDataset(annotated_videos(write_davis_tree(tmp_path / "tiny", {"a": 2}), layout="davis"))
    dm = VOSClipDataModule(root=str(davis), batch_size=8, num_workers=0)
    with pytest.raises(ValueError, match="fewer than one batch"):
        dm.setup("fit")
