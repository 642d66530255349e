"""A resumed run continues the uninterrupted one exactly; Ctrl-C stops cleanly with a checkpoint;
the end of every run leaves last.ckpt and a labelled picture; ranks draw differently."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from corrflow.train import resumed_run_dir, train
from tests.conftest import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]


def digest(t: torch.Tensor) -> str:
    return hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class Recorder(pl.Callback):
    """Per optimizer step: what the step saw (clips, bottlenecked inputs, coins) and its loss; with
    ``out_dir``, each rank also writes its records to ``rank<r>.json``."""

    def __init__(self, out_dir: str | None = None) -> None:
        self.out_dir, self.steps = out_dir, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._seed = pl_module.step_seed()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        inputs = pl_module._last_out["inputs"]  # (B, T, 3, H, W), bottlenecked
        self.steps[trainer.global_step] = {
            "frames": digest(batch["frames"]),
            "inputs": digest(inputs),
            "dropped": [int(c) for c in range(3) if not inputs[:, :, c].any()],  # colour dropout, batch-wide
            "use_gt": pl_module._last_use_gt,
            "seed": str(self._seed),
            "loss": float(outputs["loss"]),
        }

    def on_train_end(self, trainer, pl_module):
        if self.out_dir:
            Path(self.out_dir).mkdir(parents=True, exist_ok=True)
            (Path(self.out_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.steps))


class SigintAt(pl.Callback):
    """Sends this process a real SIGINT (Ctrl-C) at the start of step ``step`` (1-based)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGINT)


RECORD = ["+callbacks.recorder._target_=tests.test_train_resume.Recorder", "callbacks.progress_bar=null"]


def recorder(objs) -> dict:
    return next(cb for cb in objs["trainer"].callbacks if isinstance(cb, Recorder)).steps


def assert_same_steps(a: dict, b: dict, steps) -> None:
    for s in steps:
        assert a[s]["frames"] == b[s]["frames"], f"step {s}: different clips"
        assert a[s]["inputs"] == b[s]["inputs"], f"step {s}: different colour dropout / jitter"
        assert a[s]["use_gt"] == b[s]["use_gt"], f"step {s}: different scheduled-sampling coins"
        assert a[s]["loss"] == pytest.approx(b[s]["loss"], rel=1e-5, abs=1e-6), f"step {s}: different loss"


def test_a_resumed_run_equals_the_uninterrupted_one(tiny_train_cfg, tmp_path):
    """6 clips an epoch, 2 a batch: 3 steps an epoch, 6 steps = 2 epochs. Resuming a periodic
    checkpoint from mid-epoch 0 (step 2), and the last.ckpt of a run that stopped at max_steps=4
    (mid-epoch 1), each continue to step 6 exactly as the uninterrupted run: same clips, same
    colour dropout and jitter, same coins, same losses and weights."""
    full_cfg = tiny_train_cfg(*RECORD, "callbacks.model_checkpoint.every_n_train_steps=2", "trainer.max_steps=6")
    _, full = train(full_cfg)
    ref = recorder(full)
    assert sorted(ref) == [1, 2, 3, 4, 5, 6]
    # the steps differ from each other, so the equalities below are not trivial
    assert len({ref[s]["frames"] for s in ref}) > 1 and len({ref[s]["inputs"] for s in ref}) == 6
    step2 = tmp_path / "step2.ckpt"
    shutil.copyfile(Path(full_cfg.paths.output_dir) / "checkpoints" / "step0000002.ckpt", step2)

    short_cfg = tiny_train_cfg(*RECORD, "trainer.max_steps=4")
    train(short_cfg)
    step4 = tmp_path / "last4.ckpt"
    shutil.copyfile(Path(short_cfg.paths.output_dir) / "checkpoints" / "last.ckpt", step4)
    assert torch.load(step4, map_location="cpu", weights_only=False)["global_step"] == 4

    for at, ckpt in ((2, step2), (4, step4)):
        _, res = train(tiny_train_cfg(*RECORD, f"ckpt_path={ckpt}", "trainer.max_steps=6"))
        got = recorder(res)
        assert sorted(got) == list(range(at + 1, 7)), f"resumed from step {at}, trained steps {sorted(got)}"
        assert_same_steps(ref, got, range(at + 1, 7))
        for k, v in full["model"].state_dict().items():
            torch.testing.assert_close(res["model"].state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_every_run_ends_with_last_ckpt_and_a_labelled_picture(tiny_train_cfg):
    cfg = tiny_train_cfg("trainer.max_steps=3")  # every 500 steps: only step 1 and the end
    _, objs = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 3
    assert (out / "checkpoints" / "final.ckpt").is_file()
    pictures = sorted(p.name for p in (out / "images").glob("*.png"))
    assert pictures == ["colourisation_step0000001.png", "colourisation_step0000003.png"]
    # 2 clips x 4 rows of 32 px and 3 columns, plus label margins on the left and top
    grid_h, grid_w = 2 + 8 * (32 + 2), 2 + 3 * (32 + 2)
    w, h = Image.open(out / "images" / pictures[-1]).size
    assert w > grid_w + 40 and h > grid_h + 5


def test_ctrl_c_saves_last_ckpt_at_the_step_boundary_and_prints_the_resume_command(tiny_train_cfg, capsys):
    before = signal.getsignal(signal.SIGINT)  # Python's default, or "ignored" under nohup / a background job
    cfg = tiny_train_cfg("+callbacks.sigint._target_=tests.test_train_resume.SigintAt", "+callbacks.sigint.step=2", "trainer.max_steps=5")
    _, objs = train(cfg)
    assert objs["interrupted"] and objs["final_ckpt"] is None
    assert objs["trainer"].global_step == 2  # step 2 finished, then the run stopped
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2
    printed = capsys.readouterr().out
    assert "resume with:" in printed and f"ckpt_path={last}" in printed
    assert signal.getsignal(signal.SIGINT) is before  # the handler was put back


def test_resuming_writes_into_the_run_folder(tmp_path):
    run = tmp_path / "logs" / "train" / "runs" / "2026-01-01_00-00-00"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"")
    assert resumed_run_dir(str(ckpt)) == run.resolve()
    assert resumed_run_dir(str(tmp_path / "elsewhere.ckpt")) is None
    assert resumed_run_dir(None) is None
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        resumed = compose(config_name="train", return_hydra_config=True, overrides=[f"ckpt_path={ckpt}", f"paths.log_dir={tmp_path / 'logs'}"])
        fresh = compose(config_name="train", return_hydra_config=True, overrides=[f"paths.log_dir={tmp_path / 'logs'}"])
    GlobalHydra.instance().clear()
    assert Path(OmegaConf.select(resumed, "hydra.run.dir")) == run.resolve()
    assert OmegaConf.select(resumed, "hydra.output_subdir").startswith(".hydra/resumed-")
    assert Path(OmegaConf.select(fresh, "hydra.run.dir")).parent == tmp_path / "logs" / "train" / "runs"
    assert OmegaConf.select(fresh, "hydra.output_subdir") == ".hydra"


_RANK_SCRIPT = """
import sys
from omegaconf import OmegaConf
import corrflow.train as t
from corrflow.data.pretraining.datamodule import CorrFlowDataModule
fit, wait = t.fit_and_save_colour_bins, t.wait_for_colour_bins
def fit_counted(*a, **k):
    print("FIT", flush=True)
    return fit(*a, **k)
def wait_counted(*a, **k):
    print("WAIT", flush=True)
    return wait(*a, **k)
t.fit_and_save_colour_bins, t.wait_for_colour_bins = fit_counted, wait_counted
cfg = OmegaConf.create({"colour_bins": {"path": sys.argv[2], "n_bins": 16, "n_frames": 30, "pixels_per_frame": 100,
                        "seed": 0, "fit_if_missing": True, "wait_s": 300}, "data": {"size": [32, 32]}, "paths": {"cache_dir": "x"}})
print("LOADED", t.prepare_colour_bins(cfg, CorrFlowDataModule(root=sys.argv[1], num_workers=0)), flush=True)
"""


def test_colour_bins_are_fitted_by_rank_zero_only(video_root, tmp_path):
    """Two processes as torchrun starts them (RANK=1, RANK=0): rank 1, started first, waits for
    rank 0's file instead of fitting its own; rank 0 fits once; both load the same file."""
    bins = tmp_path / "bins.npz"

    def start(rank: int) -> subprocess.Popen:
        env = {**os.environ, "RANK": str(rank), "PYTHONPATH": str(ROOT)}
        return subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, str(video_root), str(bins)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)

    rank1 = start(1)
    first = rank1.stdout.readline().strip()  # blocks until rank 1 has decided what to do
    assert first == "WAIT" and not bins.exists()
    rank0 = start(0)
    out0 = rank0.communicate(timeout=300)[0]
    out1 = first + "\n" + rank1.communicate(timeout=300)[0]
    assert rank0.returncode == 0 and rank1.returncode == 0, (out0, out1)
    assert out0.count("FIT") == 1 and "WAIT" not in out0
    assert "FIT" not in out1 and f"LOADED {bins}" in out1


@pytest.mark.slow
def test_two_gloo_ranks_draw_differently_and_reproducibly(tiny_train_cfg, tmp_path):
    records = []
    for run in ("a", "b"):
        out = tmp_path / f"records_{run}"
        cfg = tiny_train_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
                             "trainer.strategy=ddp_spawn", "trainer.max_steps=3", "data.clips_per_video=4",
                             "+callbacks.recorder._target_=tests.test_train_resume.Recorder", f"+callbacks.recorder.out_dir={out}")
        train(cfg)
        records.append([json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)])
    (a0, a1), (b0, b1) = records
    assert a0 == b0 and a1 == b1  # reproducible from the seed
    assert sorted(a0) == sorted(a1) == ["1", "2", "3"]
    assert all(a0[s]["seed"] != a1[s]["seed"] for s in a0)  # each rank its own stream
    # the draws themselves differ (not only the data): colour dropout and coins over the 3 steps
    assert [(a0[s]["dropped"], a0[s]["use_gt"]) for s in a0] != [(a1[s]["dropped"], a1[s]["use_gt"]) for s in a1]
    assert all(a0[s]["frames"] != a1[s]["frames"] for s in a0)  # and the ranks see different clips
