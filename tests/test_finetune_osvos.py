"""tools/finetune.py experiment=osvos_parent / osvos_contour: a few CPU steps on tiny generated
data; the backbone starts exactly from a pretraining checkpoint; the side weight decays 1 -> 0;
the checkpoints are OSVOS's (parent and contour kinds told apart); resuming; wrong files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from corrflow.finetune import finetune
from corrflow.models.segmenters import OSVOSNet, load_segmenter
from tests.helpers.vos_synthetic import write_davis_tree
from tests.test_finetune import compose_finetune_cfg, csv_rows, pretrain_ckpt  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "model.backbone.arch=crw",
    "model.net.side_channels=4",
    "data.size=[32,32]",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.pin_memory=false",
    "trainer.accelerator=cpu",
    "trainer.max_steps=3",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
]


@pytest.fixture
def make_cfg(tmp_path):
    root = write_davis_tree(tmp_path / "davis", {"a": 5, "b": 4}, size=(32, 40))

    def make(*extra: str, out: str = "out"):
        cfg = compose_finetune_cfg(tmp_path, [f"data.root={root}", *TINY, *extra])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / out)
        return cfg

    return make


@pytest.mark.parametrize(("experiment", "kind"), [("osvos_parent", "osvos"), ("osvos_contour", "osvos_contour")])
def test_each_experiment_trains_a_few_steps_and_saves_its_kind(make_cfg, experiment, kind):
    cfg = make_cfg(f"experiment={experiment}")
    metrics, objs = finetune(cfg)
    assert objs["trainer"].global_step == 3 and torch.isfinite(torch.tensor(metrics["train/loss_step"]))
    rows = [r for r in csv_rows(cfg.paths.output_dir) if r.get("train/side_weight")]
    assert [float(r["train/side_weight"]) for r in rows] == pytest.approx([1.0, 2 / 3, 1 / 3])
    ckpt = torch.load(objs["final_ckpt"], weights_only=False)
    assert ckpt["corrflow"]["kind"] == kind and ckpt["corrflow"]["stage"] == "static"
    net = load_segmenter(objs["final_ckpt"], kind=kind)
    assert isinstance(net, OSVOSNet) and net.config == {"n_sides": 3, "side_channels": 4, "stages": ["layer1", "layer2", "layer3"]}  # CRW: 3 distinct
    assert list((Path(cfg.paths.output_dir) / "images").glob("segmentation_step*.png"))


def test_parent_starts_exactly_from_the_pretraining_checkpoint(make_cfg, pretrain_ckpt):  # noqa: F811
    path, weights = pretrain_ckpt
    _, objs = finetune(make_cfg("experiment=osvos_parent", f"model.backbone.init={path}", "model.optimizer.lr=0", "trainer.max_steps=1"))
    encoder = objs["model"].net.backbone.encoder
    for k, v in weights.items():
        assert torch.equal(encoder.state_dict()[k], v), k


def test_resume_and_wrong_kinds(make_cfg, tmp_path):
    cfg = make_cfg("experiment=osvos_parent", "trainer.max_steps=2", "callbacks.last_checkpoint.every_n_train_steps=1", out="p")
    _, objs = finetune(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    _, resumed = finetune(make_cfg("experiment=osvos_parent", f"ckpt_path={last}", "trainer.max_steps=3", out="p2"))
    assert resumed["trainer"].global_step == 3
    with pytest.raises(ValueError, match=r"is a OSVOS checkpoint; this run trains OSVOS_CONTOUR"):
        finetune(make_cfg("experiment=osvos_contour", f"ckpt_path={objs['final_ckpt']}", out="c"))
    stm = tmp_path / "stm.ckpt"
    torch.save({"state_dict": {}, "corrflow": {"format": 1, "kind": "stm", "backbone": {}, "segmenter": {}}}, stm)
    with pytest.raises(ValueError, match=r"is a STM checkpoint; this run trains OSVOS"):
        finetune(make_cfg("experiment=osvos_parent", f"ckpt_path={stm}", out="s"))


def test_model_config_defaults(tmp_path):
    import hydra

    cfg = compose_finetune_cfg(tmp_path, ["experiment=osvos_parent", "model.backbone.arch=crw"])
    module = hydra.utils.instantiate(cfg.model)
    assert module.kind == "osvos" and module.net.config == {"n_sides": 3, "side_channels": 16, "stages": ["layer1", "layer2", "layer3"]}
    corrflow = hydra.utils.instantiate(compose_finetune_cfg(tmp_path, ["experiment=osvos_parent", "model.backbone.arch=corrflow"]).model)
    assert corrflow.net.config["stages"] == ["layer2", "layer3", "layer4", "head"]  # four distinct stages: four sides
    assert module.side_weight_steps is None and module.optimizer_factory.keywords["lr"] == 1e-4
    contour = hydra.utils.instantiate(compose_finetune_cfg(tmp_path, ["experiment=osvos_contour", "model.backbone.arch=crw"]).model)
    assert contour.kind == "osvos_contour" and contour.target == "contour"
