"""The held-out monitor of pretraining: the resized DAVIS copy it reads, the random crops of the
CPU recipe, and a run that logs val/J&F (equal to what tools/propagate.py scores for the same
checkpoint), keeps best.ckpt and draws the curves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from corrflow.data.pretraining.clips import ClipDataset, crop_scale_size
from corrflow.data.video.resize import resize_frames
from corrflow.data.vos.davis import DAVISDataset
from corrflow.data.vos.davis_resized import resized_davis, short_side_size
from corrflow.data.video.sources import discover_sources
from corrflow.train import train
from corrflow.utils.plots import plot_training_curves, read_heldout_scores, read_metrics_csv, run_metrics_csvs
from tests.test_data_davis import make_davis_tree

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the resized copy ----------------------------------------------------------------------------

def test_short_side_size() -> None:
    assert short_side_size((480, 854), 240) == (240, 427)
    assert short_side_size((854, 480), 240) == (427, 240)
    assert short_side_size((480, 854), None) == (480, 854)


def test_resized_davis_copy(tmp_path: Path) -> None:
    src = make_davis_tree(tmp_path / "src", {"a": 5, "b": 4}, year="2016", n_objects=1, size=(40, 64))
    original = DAVISDataset(src, year="2016", split="val", single_object=True)
    ds = resized_davis(src, tmp_path / "copy", short_side=20, year="2016", split="val", sequences=["b"])
    assert ds.names == ["b"] and ds.single_object and len(ds[0]) == 4
    assert ds[0].size == (20, 32)
    # masks by nearest neighbour: ids stay ids, and each is the source mask sampled at the cell centres
    for t in range(4):
        small, big = ds[0].mask(t), original[1].mask(t)
        assert set(np.unique(small).tolist()) <= {0, 1}
        np.testing.assert_array_equal(small, np.array(Image.fromarray(big).resize((32, 20), Image.NEAREST)))
    # frames: a resize of the source frames (lossless PNGs)
    frame = np.asarray(Image.fromarray(original[1].frame(0)).resize((32, 20), Image.BILINEAR, reducing_gap=None))
    np.testing.assert_array_equal(ds[0].frame(0), frame)
    # made once: the same call reuses it, another short side remakes it
    stamp = (tmp_path / "copy" / "SOURCE.json").stat().st_mtime_ns
    resized_davis(src, tmp_path / "copy", short_side=20, year="2016", split="val", sequences=["b"])
    assert (tmp_path / "copy" / "SOURCE.json").stat().st_mtime_ns == stamp
    again = resized_davis(src, tmp_path / "copy", short_side=16, year="2016", split="val", sequences=["b"])
    assert again[0].size == (16, 26)
    with pytest.raises(ValueError, match="short_side"):
        resized_davis(src, tmp_path / "x", short_side=4)
    with pytest.raises(FileNotFoundError, match="DAVIS root"):
        resized_davis(tmp_path / "nowhere", tmp_path / "y", short_side=20)


# -- random crops at the frames' own scale ---------------------------------------------------------

def test_crop_scale_size() -> None:
    assert crop_scale_size((480, 854), (128, 128), 240) == (240, 427)
    assert crop_scale_size((480, 854), (128, 128), None) == (480, 854)
    assert crop_scale_size((100, 300), (128, 128), None) == (128, 384)  # scaled up so that the crop fits


def test_clip_crops_one_window_of_the_resized_frames(tmp_path: Path) -> None:
    """Every frame of a clip is cut at the same place, from the frame resized to the short side;
    the windows differ between draws; ``size`` plays no part."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "v"
    folder.mkdir()
    frames = rng.integers(0, 256, (9, 60, 90, 3), dtype=np.uint8)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{t:05d}.png")
    ds = ClipDataset(discover_sources(tmp_path), clip_len=3, frame_gap=4, size=(7, 7), sampling="random",
                     crop=(16, 24), crop_short_side=30)  # fmt: skip
    corners = set()
    for seed in range(6):
        clip = ds[(0, seed)]["frames"]
        assert clip.shape == (3, 3, 16, 24)
        big = resize_frames(frames[[0, 4, 8]], (30, 45))
        # find the window in frame 0, then check the other frames at the same place
        hits = [(y, x) for y in range(30 - 16 + 1) for x in range(45 - 24 + 1) if torch.equal(big[0, :, y : y + 16, x : x + 24], clip[0])]
        assert len(hits) == 1
        y, x = hits[0]
        for t in range(3):
            assert torch.equal(big[t, :, y : y + 16, x : x + 24], clip[t])
        corners.add(hits[0])
        assert torch.equal(ds[(0, seed)]["frames"], clip)  # the draw seed decides the window
    assert len(corners) > 1
    with pytest.raises(ValueError, match="crop"):
        ClipDataset(discover_sources(tmp_path), crop=(4, 4))


# -- a run with the monitor ------------------------------------------------------------------------

@pytest.fixture
def heldout_root(tmp_path: Path) -> Path:
    return make_davis_tree(tmp_path / "DAVIS", {"held-a": 5, "held-b": 4}, year="2016", n_objects=1, size=(40, 64))


def test_monitor_logs_heldout_scores_keeps_best_and_matches_propagate(tiny_train_cfg, heldout_root: Path, tmp_path: Path) -> None:
    from tests.test_tools_propagate import compose_cfg
    from corrflow.propagation.run import propagate

    cfg = tiny_train_cfg(
        f"data.val_root={heldout_root}", "data.val_short_side=24", "monitor.every_n_steps=2", "trainer.max_steps=4",
        "trainer.max_epochs=100",
    )  # fmt: skip
    _, objs = train(cfg)
    out = Path(cfg.paths.output_dir)
    s = read_metrics_csv(*run_metrics_csvs(out))
    steps = [st for st, _ in s["val/J&F"]]
    assert steps == [0, 2, 4]  # before the first step, then every 2
    for key in ("val/J", "val/F", "val/seconds"):
        assert len(s[key]) == 3
    for (_, jf), (_, j), (_, f) in zip(s["val/J&F"], s["val/J"], s["val/F"]):
        assert jf == pytest.approx((j + f) / 2, abs=1e-6)  # (each against the official CSVs below)
    assert (out / "checkpoints" / "best.ckpt").is_file()
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert best["global_step"] in (2, 4)
    assert (out / "heldout" / "step0000004" / "global_results-custom.csv").is_file()
    # the monitor's last score is what tools/propagate.py gives the final checkpoint on the same copy
    copy = objs["datamodule"].val_copy_dir()
    result = propagate(compose_cfg(
        "task=davis2016", f"data.root={copy}", "features=checkpoint", f"ckpt={objs['final_ckpt']}", "protocol=crw",
        f"output_dir={tmp_path / 'prop'}", "overlay=null",
    ))  # fmt: skip
    assert result["scores"]["J&F-Mean"] == pytest.approx(s["val/J&F"][-1][1], abs=1e-6)
    # the curves picture gains the held-out panel; several runs compare in one plot
    png = plot_training_curves(run_metrics_csvs(out), tmp_path / "curves.png")
    assert Image.open(png).size[0] > 1700  # four panels (three without the monitor)
    # the per-step official CSVs under heldout/ hold the same scores as the logged curve
    from_csvs = read_heldout_scores(out / "heldout")
    assert [st for st, _ in from_csvs] == steps
    assert [v for _, v in from_csvs] == pytest.approx([v for _, v in s["val/J&F"]], abs=1e-3)
    from tests.test_utils_cli import load_tool

    plot_main = load_tool("plot_training").main

    assert plot_main([str(out), str(out), "--heldout", "--labels", "a", "b", "--ref", "Lab=0.3", "-o", str(tmp_path / "h.png")]) == 0
    assert Image.open(tmp_path / "h.png").size[0] > 500
    with pytest.raises(SystemExit):  # user_errors: several runs without --heldout
        plot_main([str(out), str(out)])


def test_without_a_heldout_split_nothing_is_validated(tiny_train_cfg) -> None:
    cfg = tiny_train_cfg("monitor.every_n_steps=1")
    train(cfg)
    out = Path(cfg.paths.output_dir)
    assert "val/J&F" not in read_metrics_csv(*run_metrics_csvs(out))
    assert not (out / "checkpoints" / "best.ckpt").exists()
    assert not (out / "heldout").exists()


def test_a_run_stopped_early_is_not_validated_again(tiny_train_cfg, heldout_root: Path) -> None:
    """Lightning validates once more when a run stops early (``trainer.should_stop``, as Ctrl-C
    sets it); the monitor skips that pass: only its scheduled points are scored."""
    cfg = tiny_train_cfg(
        f"data.val_root={heldout_root}", "data.val_short_side=24", "monitor.every_n_steps=2", "trainer.max_steps=10",
        "trainer.max_epochs=100", "+callbacks.stop._target_=tests.test_train_heldout.StopAt3Callback",
    )  # fmt: skip
    _, objs = train(cfg)
    assert objs["trainer"].global_step == 3
    out = Path(cfg.paths.output_dir)
    assert [st for st, _ in read_heldout_scores(out / "heldout")] == [0, 2]
    assert [st for st, _ in read_metrics_csv(*run_metrics_csvs(out))["val/J&F"]] == [0, 2]


class StopAt3Callback:
    """A Lightning callback (built by Hydra from the test's config) that stops the run after step 3."""

    def __new__(cls):
        import pytorch_lightning as pl

        class _Stop(pl.Callback):
            def on_train_batch_end(self, trainer, *args) -> None:
                if trainer.global_step == 3:
                    trainer.should_stop = True

        return _Stop()
