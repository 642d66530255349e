"""Every experiment config runs; checkpoints resume, carry the encoder, and survive a NaN."""

import hashlib
from pathlib import Path

import pytest
import torch

from corrflow.models.checkpoint import load_encoder
from corrflow.train import train
from corrflow.utils.loggers import resolve_wandb_mode
from tests.conftest import TINY


def sha(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("experiment", ["corrflow", "corrflow_debug"])
def test_experiment_configs_train_a_few_steps(tiny_train_cfg, experiment, tmp_path):
    cfg = tiny_train_cfg(f"experiment={experiment}", *TINY)  # the tiny data settings win over the experiment's
    metrics, objs = train(cfg)
    assert objs["trainer"].global_step == 2
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"]))
    # the colour bins were fitted once and saved as an artefact
    assert Path(cfg.colour_bins.path).is_file()
    # the final checkpoint rebuilds the trained encoder alone
    enc = load_encoder(objs["final_ckpt"])
    for (k, v), (k2, v2) in zip(enc.state_dict().items(), objs["model"].net.encoder.state_dict().items()):
        assert k == k2 and torch.equal(v, v2.cpu())
    # a colourisation picture was written at the first step
    assert list((Path(cfg.paths.output_dir) / "images").glob("colourisation_step*.png"))


def test_debug_fast_dev_run(tiny_train_cfg):
    _, objs = train(tiny_train_cfg("debug=fdr"))
    assert objs["trainer"].global_step == 1


def test_crw_encoder_variant_trains(tiny_train_cfg):
    _, objs = train(tiny_train_cfg("model/net/encoder=crw", "data.size=[64,64]"))
    assert objs["model"].net.encoder.stride == 8


def test_resume_continues_step_schedule_and_optimizer(tiny_train_cfg, tmp_path):
    cfg = tiny_train_cfg("callbacks.last_checkpoint.every_n_train_steps=1", "trainer.max_steps=3")
    _, objs = train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert last.is_file()
    ck = torch.load(last, map_location="cpu", weights_only=False)
    assert ck["global_step"] == 3
    bins = cfg.colour_bins.path
    Path(bins).unlink()  # resuming restores a lost colour-bin file from the checkpoint

    cfg2 = tiny_train_cfg(f"ckpt_path={last}", "trainer.max_steps=5", f"colour_bins.path={bins}")
    _, objs2 = train(cfg2)
    assert objs2["trainer"].global_step == 5
    final = torch.load(objs2["final_ckpt"], map_location="cpu", weights_only=False)
    assert final["lr_schedulers"][0]["last_epoch"] == 5  # the LR schedule kept its position
    assert Path(bins).is_file()
    torch.testing.assert_close(objs2["model"].quantizer.centroids, objs["model"].quantizer.centroids.cpu())


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_train_cfg):
    cfg = tiny_train_cfg("callbacks.last_checkpoint.every_n_train_steps=1", "trainer.max_steps=2")
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    before = sha(last)
    bad = tiny_train_cfg(f"ckpt_path={last}", "trainer.max_steps=4", "model.cycle_weight=nan", "callbacks.last_checkpoint.every_n_train_steps=1")
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        train(bad)
    assert sha(last) == before


def test_missing_checkpoint_and_missing_bins_are_clear_errors(tiny_train_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_path not found"):
        train(tiny_train_cfg(f"ckpt_path={tmp_path / 'nope.ckpt'}"))
    with pytest.raises(FileNotFoundError, match="colour-bin file not found"):
        train(tiny_train_cfg(f"colour_bins.path={tmp_path / 'bins.npz'}", "colour_bins.fit_if_missing=false"))


def test_tensorboard_logger_gets_scalars(tiny_train_cfg):
    cfg = tiny_train_cfg("logger=tensorboard")
    train(cfg)
    assert list(Path(cfg.paths.output_dir, "tensorboard").rglob("events.out.tfevents.*"))


def test_wandb_goes_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"


@pytest.mark.slow
def test_wandb_offline_run_writes_a_local_run(tiny_train_cfg, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = tiny_train_cfg("logger=wandb")
    train(cfg)
    assert list(Path(cfg.paths.output_dir).rglob("offline-run-*"))


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tiny_train_cfg):
    cfg = tiny_train_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "trainer.strategy=ddp_spawn")
    _, objs = train(cfg)
    assert objs["trainer"].world_size == 2


def test_fit_colour_bins_tool_writes_the_artefact(tmp_path, video_root):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    bins = tmp_path / "bins.npz"
    cmd = [sys.executable, str(root / "tools" / "fit_colour_bins.py"), f"data.root={video_root}", f"colour_bins.path={bins}",
           "colour_bins.n_frames=20", "data.size=[32,32]", f"hydra.run.dir={tmp_path / 'run'}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "saved 16 colour bins" in res.stdout
    from corrflow.models.quantizer import load_colour_bins

    centroids, meta = load_colour_bins(bins, n_bins=16)
    assert meta["frames"] == 20 and meta["n_bins"] == 16
