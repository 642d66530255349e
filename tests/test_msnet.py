"""MSNet video classification: class-per-folder data (and split files), TSN sampling, the
temporal shift, ``tools/finetune.py experiment=msnet`` a few steps on generated videos of a
texture moving in one of four directions, and the checkpoint rebuilt from the file alone (the
MotionSqueeze settings recorded in it)."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import open_dict

from corrflow.data.action.synthetic_motion import DIRECTIONS, write_moving_texture_videos
from corrflow.data.action.videos import ActionVideoDataset, segment_indices
from corrflow.finetune import finetune
from corrflow.lit.action_module import ActionLitModule, topk_accuracy
from corrflow.models.backbone import SegmentationBackbone
from corrflow.models.motion.motion_squeeze import MotionSqueeze
from corrflow.models.motion.temporal_shift import temporal_shift
from corrflow.models.motion.video_classifier import VideoClassifier, load_video_classifier
from tests.test_finetune import compose_finetune_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def motion_root(tmp_path: Path) -> Path:
    return write_moving_texture_videos(tmp_path / "motion", videos_per_class=5, n_frames=4, size=(32, 32), step=4)


def test_segment_indices() -> None:
    assert segment_indices(10, 5) == [1, 3, 5, 7, 9]
    assert segment_indices(3, 4) == [0, 1, 1, 2]  # short videos repeat frames
    rng = random.Random(0)
    for _ in range(20):
        idx = segment_indices(100, 4, rng=rng)
        assert [i // 25 for i in idx] == [0, 1, 2, 3]


def test_dataset_splits_and_split_files(motion_root: Path, tmp_path: Path) -> None:
    train = ActionVideoDataset(root=motion_root, split="train", n_segments=4, size=(16, 16))
    val = ActionVideoDataset(root=motion_root, split="val", n_segments=4, size=(16, 16))
    assert train.classes == sorted(DIRECTIONS) and len(train) == 16 and len(val) == 4
    assert not {s.path for s in train.sources} & {s.path for s in val.sources}
    item = train[(0, 123)]
    assert item["frames"].shape == (4, 3, 16, 16) and item["label"] == 0 and item["skipped"] == 0
    lst = tmp_path / "trainlist.txt"
    lst.write_text("up/up_0000 4\nleft/left_0002 2\n")
    listed = ActionVideoDataset(root=motion_root, split="train", split_file=lst, n_segments=2, size=(8, 8))
    assert [Path(s.path).name for s in listed.sources] == ["up_0000", "left_0002"]
    assert listed.labels == [train.classes.index("up"), train.classes.index("left")]
    lst.write_text("sideways/x 1\n")
    with pytest.raises(ValueError, match="sideways"):
        ActionVideoDataset(root=motion_root, split_file=lst)


def test_unreadable_video_is_skipped_and_counted(motion_root: Path) -> None:
    broken = motion_root / "up" / "up_0001" / "00002.png"
    broken.write_bytes(b"not a png")
    ds = ActionVideoDataset(root=motion_root, split="train", n_segments=4, size=(16, 16))
    i = [Path(s.path).name for s in ds.sources].index("up_0001")
    item = ds[(i, 5)]
    assert item["skipped"] == 1 and item["frames"].shape == (4, 3, 16, 16)


def test_temporal_shift_moves_one_eighth_each_way() -> None:
    x = torch.arange(2 * 3 * 16, dtype=torch.float32).view(6, 16, 1, 1)  # B=2 clips of T=3
    y = temporal_shift(x, 3).view(2, 3, 16)
    v = x.view(2, 3, 16)
    torch.testing.assert_close(y[:, :2, :2], v[:, 1:, :2])  # from the future
    assert (y[:, 2, :2] == 0).all()
    torch.testing.assert_close(y[:, 1:, 2:4], v[:, :2, 2:4])  # from the past
    assert (y[:, 0, 2:4] == 0).all()
    torch.testing.assert_close(y[:, :, 4:], v[:, :, 4:])


def test_topk_accuracy() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3]])
    assert topk_accuracy(logits, torch.tensor([1, 2]), 1) == 0.5
    assert topk_accuracy(logits, torch.tensor([1, 2]), 2) == 1.0
    assert topk_accuracy(logits, torch.tensor([1, 2]), 5) == 1.0  # capped at 3 classes


TINY = ["experiment=msnet", "model.backbone.arch=crw", "model.net.n_classes=4", "data.n_segments=4", "data.size=[32,32]",
        "data.batch_size=4", "data.num_workers=0", "data.pin_memory=false", "trainer.accelerator=cpu", "trainer.max_steps=4",
        "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false", "callbacks.progress_bar=null"]  # fmt: skip


def test_msnet_experiment_trains_and_validates(motion_root: Path, tmp_path: Path) -> None:
    cfg = compose_finetune_cfg(tmp_path, [f"data.root={motion_root}", *TINY])
    metrics, objs = finetune(cfg)
    assert objs["model"].net.backbone.motion is not None
    for key in ("train/loss", "val/top1", "val/top5"):
        assert key in metrics  # (with 4 classes top-5 is 1 whatever the network: how well it learns is the test below)
    ckpt = torch.load(objs["final_ckpt"], map_location="cpu", weights_only=False)
    assert ckpt["corrflow"]["kind"] == "msnet" and ckpt["corrflow"]["classifier"]["n_classes"] == 4
    assert ckpt["corrflow"]["backbone"]["motion"]["settings"]["correlation"] == "relu"  # the release's default, recorded
    net = load_video_classifier(objs["final_ckpt"])
    trained = objs["model"].net.eval()
    clip = torch.rand(2, 4, 3, 32, 32)
    torch.testing.assert_close(net(clip), trained(clip))


def precise_batch_norm(module: torch.nn.Module, clips: torch.Tensor, *, batch: int = 16) -> None:
    """Every BatchNorm's running statistics recomputed as the plain average over ``clips``
    (B, T, 3, H, W) through the training-mode network: after a few dozen steps, the running
    averages still mostly hold the early, random network's statistics."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    module.train()
    with torch.no_grad():
        for i in range(0, len(clips), batch):
            module(clips[i : i + batch])
    for m in norms:
        m.momentum = 0.1


def test_msnet_learns_the_direction_of_motion(tmp_path: Path) -> None:
    """MSNet as configured (conf/model/msnet.yaml, the CRW-variant backbone), 40 SGD steps on 32
    generated videos of four directions (a fresh texture each, so motion is the only cue), reaches
    a top-1 of at least 0.5 on 32 held-out videos (chance: 0.25; 0.69 measured)."""
    root = write_moving_texture_videos(tmp_path / "motion", videos_per_class=16, n_frames=4, size=(32, 32), step=8)
    cfg = compose_finetune_cfg(tmp_path, [f"data.root={root}", *TINY])
    torch.manual_seed(0)
    lit = hydra.utils.instantiate(cfg.model)
    optimizer = lit.configure_optimizers()

    def clips(split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds = ActionVideoDataset(root=root, split=split, n_segments=4, size=(32, 32), val_every=2)
        items = [ds[(i, seed + i)] for i in range(len(ds))]
        return torch.stack([x["frames"] for x in items]), torch.tensor([x["label"] for x in items])

    train_x, train_y = clips("train", 0)
    val_x, val_y = clips("val", 0)
    assert len(train_y) == len(val_y) == 32 and train_y.bincount().tolist() == [8] * 4
    g = torch.Generator().manual_seed(0)
    lit.train()
    for _ in range(40):
        idx = torch.randperm(len(train_y), generator=g)[:8]
        loss = lit.model_step({"frames": train_x[idx], "label": train_y[idx]})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    precise_batch_norm(lit.net, train_x)
    lit.eval()
    with torch.no_grad():
        top1 = float(topk_accuracy(lit.net(val_x), val_y, 1))
    assert top1 >= 0.5, f"held-out top-1 {top1:.3f} (chance 0.25)"


def _save_msnet(path: Path, *, seed: int = 0, **motion) -> ActionLitModule:
    """An MSNet with the given MotionSqueeze settings, its BN statistics moved off their start,
    saved as tools/finetune.py saves it."""
    torch.manual_seed(seed)
    backbone = SegmentationBackbone(arch="crw", motion=partial(MotionSqueeze, n_frames=2, **motion), seed=seed)
    lit = ActionLitModule(backbone=backbone, net=partial(VideoClassifier, n_classes=3, n_frames=2, dropout=0.2))
    with torch.no_grad():
        lit.net.train()(torch.rand(2, 2, 3, 32, 32))  # running statistics of a batch
    ckpt = {"state_dict": lit.state_dict(), "global_step": 0}
    lit.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return lit


def test_msnet_checkpoint_rebuilds_from_the_file_alone(tmp_path: Path) -> None:
    settings = dict(radius=2, channels=8, estimator="soft_argmax", sigma=3.0, beta=20.0, reduction="bias", correlation="signed",
                    first_kernel=3, widths=[8, 16, 24], final_relu=False)  # fmt: skip
    lit = _save_msnet(tmp_path / "m.ckpt", **settings)
    net = load_video_classifier(tmp_path / "m.ckpt")
    assert not net.training and isinstance(net.backbone.motion, MotionSqueeze)
    assert {k: net.backbone.motion.config[k] for k in settings} == settings
    assert net.config == lit.net.config and net.backbone.config == lit.net.backbone.config
    clip = torch.rand(3, 2, 3, 32, 32)
    torch.testing.assert_close(net(clip), lit.net.eval()(clip), rtol=0, atol=0)
    # the temporal shift is rebuilt too (hooks, no weights): without it the logits differ
    plain = load_video_classifier(tmp_path / "m.ckpt")
    for block in [m for m in plain.backbone.encoder.modules() if hasattr(m, "conv1")]:
        block.conv1._forward_pre_hooks.clear()
    assert not torch.allclose(plain(clip), net(clip))


def test_msnet_loader_refuses_what_it_cannot_rebuild(tmp_path: Path) -> None:
    _save_msnet(tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=False)
    del ckpt["corrflow"]["backbone"]["motion"]  # as written before the settings were recorded
    torch.save(ckpt, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match="does not record its settings"):
        load_video_classifier(tmp_path / "old.ckpt")
    ckpt["corrflow"] = {"format": 1, "kind": "osvos", "backbone": {}, "segmenter": {}, "prefix": "net."}
    torch.save(ckpt, tmp_path / "osvos.ckpt")
    with pytest.raises(ValueError, match="is a OSVOS checkpoint, not an MSNet one"):
        load_video_classifier(tmp_path / "osvos.ckpt")
    with pytest.raises(FileNotFoundError, match="MSNet checkpoint not found"):
        load_video_classifier(tmp_path / "missing.ckpt")


def test_msnet_class_count_must_match(motion_root: Path, tmp_path: Path) -> None:
    cfg = compose_finetune_cfg(tmp_path, [f"data.root={motion_root}", *TINY])
    with open_dict(cfg):
        cfg.model.net.n_classes = 5
    with pytest.raises(ValueError, match="n_classes=5"):
        finetune(cfg)


@pytest.mark.slow
def test_msnet_run_resumes_from_its_last_checkpoint(motion_root: Path, tmp_path: Path) -> None:
    cfg = compose_finetune_cfg(tmp_path, [f"data.root={motion_root}", *TINY, "model.backbone.motion.radius=2"])
    _, objs = finetune(cfg)
    last = Path(objs["final_ckpt"]).with_name("last.ckpt")
    assert last.is_file()
    cfg2 = compose_finetune_cfg(tmp_path, [f"data.root={motion_root}", *TINY, "model.backbone.motion.radius=2",
                                           f"ckpt_path={last}", "trainer.max_steps=8"])  # fmt: skip
    _, objs2 = finetune(cfg2)
    assert objs2["trainer"].global_step == 8
