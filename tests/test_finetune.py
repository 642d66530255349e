"""tools/finetune.py: each STM experiment runs a few steps on tiny generated data; the backbone
starts from a pretraining checkpoint exactly; resuming and the static -> video start; wrong files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from corrflow.data.vos.datamodule import max_skip_at
from corrflow.finetune import finetune
from corrflow.losses.bootstrapped_ce import BootstrappedCrossEntropy
from corrflow.models.checkpoint import encoder_payload
from corrflow.models.encoder import crw_encoder
from corrflow.models.segmenters import STMSegmenter, load_segmenter
from tests.helpers.vos_synthetic import write_davis_tree

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "model=stm_narrow",
    "model.net.key_dim=8",
    "model.net.value_dim=16",
    "model.net.decoder_dim=8",
    "data.size=[32,32]",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.pin_memory=false",
    "data.max_objects=2",
    "trainer.accelerator=cpu",
    "trainer.max_steps=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
]


def compose_finetune_cfg(tmp_path: Path, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="finetune", return_hydra_config=True, overrides=overrides)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        del cfg["hydra"]
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def davis_root(tmp_path) -> Path:
    return write_davis_tree(tmp_path / "davis", {"a": 8, "b": 6}, size=(32, 40))


@pytest.fixture
def pretrain_ckpt(tmp_path) -> tuple[Path, dict]:
    """A CRW-variant pretraining checkpoint as tools/train.py writes it, with distinctive weights."""
    torch.manual_seed(7)
    enc = crw_encoder()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.01)
    path = tmp_path / "pretrain.ckpt"
    torch.save({"state_dict": {f"net.encoder.{k}": v for k, v in enc.state_dict().items()}, "corrflow": encoder_payload(enc, prefix="net.encoder.")}, path)
    return path, {k: v.clone() for k, v in enc.state_dict().items()}


@pytest.fixture
def make_cfg(tmp_path, davis_root):
    def make(*extra: str, out: str = "out") -> DictConfig:
        cfg = compose_finetune_cfg(tmp_path, [f"data.root={davis_root}", *TINY, *extra])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / out)
        return cfg

    return make


def csv_rows(output_dir: str) -> list[dict]:
    files = sorted(Path(output_dir).rglob("metrics.csv"))
    assert files, f"no metrics.csv under {output_dir}"
    with open(files[-1]) as f:
        return list(csv.DictReader(f))


def test_static_experiment_starts_exactly_from_the_pretraining_checkpoint(make_cfg, pretrain_ckpt):
    path, weights = pretrain_ckpt
    # lr 0: Adam leaves the weights as they were, so after the steps they are still the start
    metrics, objs = finetune(make_cfg("experiment=stm_static", *TINY, f"model.backbone.init={path}", "model.optimizer.lr=0"))
    assert objs["trainer"].global_step == 2 and torch.isfinite(torch.tensor(metrics["train/loss_step"]))
    net = objs["model"].net
    for encoder in (net.query_encoder.encoder, net.memory_encoder.encoder):
        for k, v in weights.items():
            assert torch.equal(encoder.state_dict()[k], v), k
    assert torch.all(net.memory_encoder.extra_conv.weight == 0)
    out = Path(objs["cfg"].paths.output_dir)
    assert list((out / "images").glob("segmentation_step*.png"))
    loaded = load_segmenter(objs["final_ckpt"])
    assert isinstance(loaded, STMSegmenter)
    assert torch.load(objs["final_ckpt"], weights_only=False)["corrflow"]["stage"] == "static"


def test_video_experiment_from_the_static_run_then_resumed(make_cfg, tmp_path):
    schedule = ["data.max_skip.ramp_steps=4", "data.max_skip.end=8", "model.backbone.arch=crw"]
    _, static = finetune(make_cfg("experiment=stm_static", *TINY, "model.backbone.arch=crw", "trainer.max_steps=1", out="static"))
    static_weights = {k: v.clone() for k, v in static["model"].state_dict().items()}
    # stage 2 from stage 1's weights: step 0, new optimizer (lr 0 keeps the weights to compare)
    cfg = make_cfg("experiment=stm", *TINY, *schedule, f"ckpt_path={static['final_ckpt']}", "model.optimizer.lr=0",
                   "callbacks.last_checkpoint.every_n_train_steps=1", out="video")  # fmt: skip
    _, video = finetune(cfg)
    assert video["trainer"].global_step == 2
    for k, v in video["model"].state_dict().items():
        assert torch.equal(v, static_weights[k]), k
    rows = [r for r in csv_rows(cfg.paths.output_dir) if r.get("train/max_skip")]
    assert [float(r["train/max_skip"]) for r in rows][0] == 0.0
    # resume the video run: the step, and the skip schedule derived from it, continue
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    cfg2 = make_cfg("experiment=stm", *TINY, *schedule, f"ckpt_path={last}", "trainer.max_steps=3", out="video2")
    _, resumed = finetune(cfg2)
    assert resumed["trainer"].global_step == 3
    rows = [r for r in csv_rows(cfg2.paths.output_dir) if r.get("train/max_skip")]
    assert float(rows[0]["train/max_skip"]) == max_skip_at(2, start=0, end=8, ramp_steps=4) == 4


def test_stage_two_builds_the_network_its_checkpoint_holds(make_cfg, pretrain_ckpt, tmp_path):
    """Stage 1 on a CRW-variant backbone started from a pretraining checkpoint, with narrow heads;
    stage 2 given only ckpt_path (the config's defaults: CorrFlow arch, paper widths) builds that
    network, loads its weights exactly and needs neither the pretraining file nor the presets."""
    path, _ = pretrain_ckpt
    _, static = finetune(make_cfg("experiment=stm_static", *TINY, f"model.backbone.init={path}", "model=stm_narrow", "trainer.max_steps=1", out="static"))
    weights = {k: v.clone() for k, v in static["model"].state_dict().items()}
    path.unlink()  # stage 2 must not need the pretraining file
    _, video = finetune(make_cfg("experiment=stm", *TINY, f"ckpt_path={static['final_ckpt']}", "model.optimizer.lr=0", out="video"))
    net = video["model"].net
    assert net.config == static["model"].net.config and net.config["key_dim"] != 128
    assert video["cfg"].model.backbone.init == "random"
    for k, v in video["model"].state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_bootstrapped_loss_option_trains(make_cfg):
    metrics, objs = finetune(make_cfg("experiment=stm", *TINY, "model.backbone.arch=crw", "model.loss.top_p=0.2", "trainer.max_steps=1"))
    assert objs["trainer"].global_step == 1 and torch.isfinite(torch.tensor(metrics["train/loss_step"]))


def test_wrong_checkpoint_kinds_are_clear_errors(make_cfg, pretrain_ckpt, tmp_path):
    path, _ = pretrain_ckpt
    with pytest.raises(ValueError, match="is a corrflow pretraining checkpoint .*pass model.backbone.init="):
        finetune(make_cfg("experiment=stm", *TINY, "model.backbone.arch=crw", f"ckpt_path={path}"))
    stm = tmp_path / "stm.ckpt"
    torch.save({"state_dict": {}, "corrflow": {"format": 1, "kind": "stm", "backbone": {}, "segmenter": {}}}, stm)
    with pytest.raises(InstantiationException, match="STM segmenter checkpoint, not a corrflow pretraining checkpoint") as info:
        finetune(make_cfg("experiment=stm", *TINY, f"model.backbone.init={stm}"))
    assert isinstance(info.value.__cause__, ValueError)  # what tools report as one line
    with pytest.raises(FileNotFoundError, match="ckpt_path not found"):
        finetune(make_cfg("experiment=stm", *TINY, f"ckpt_path={tmp_path / 'none.ckpt'}"))


def test_bootstrapped_cross_entropy_against_hand_computed_values():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]]).T.reshape(1, 2, 1, 4)
    target = torch.tensor([[[0, 0, 0, 255]]])
    per_pixel = torch.log1p(torch.exp(torch.tensor([0.0, -2.0, 3.0])))  # -log softmax of class 0
    plain = BootstrappedCrossEntropy()
    torch.testing.assert_close(plain(logits, target), per_pixel.mean())
    torch.testing.assert_close(plain(logits, target), torch.nn.functional.cross_entropy(logits, target, ignore_index=255))
    boot = BootstrappedCrossEntropy(top_p=0.5, start_step=10, end_step=20)
    torch.testing.assert_close(boot(logits, target, step=0), per_pixel.mean())  # before the ramp
    torch.testing.assert_close(boot(logits, target, step=20), per_pixel.sort().values[1:].mean())  # top ceil(0.5*3) = 2
    assert boot.fraction(15) == pytest.approx(0.75)


def test_a_resumed_run_writes_into_its_folder_only_when_it_is_the_same_stage(tmp_path):
    run = tmp_path / "logs" / "stm" / "runs" / "r1"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"")
    OmegaConf.save({"data": {"_target_": "corrflow.data.vos.datamodule.VOSClipDataModule"}}, run / ".hydra" / "config.yaml")

    def hydra_node(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="finetune", return_hydra_config=True, overrides=[f"paths.log_dir={tmp_path / 'logs'}", *overrides])
        GlobalHydra.instance().clear()
        return cfg.hydra

    same = hydra_node("experiment=stm", f"ckpt_path={ckpt}")
    assert same.run.dir == str(run) and same.output_subdir.startswith(".hydra/resumed-")
    other = hydra_node("experiment=stm_static", f"ckpt_path={ckpt}")  # static run from a video checkpoint: a new folder
    assert other.run.dir.startswith(str(tmp_path / "logs" / "stm_static" / "runs")) and other.output_subdir == ".hydra"
    fresh = hydra_node("experiment=stm")
    assert fresh.run.dir.startswith(str(tmp_path / "logs" / "stm" / "runs")) and fresh.run.dir != str(run)


@pytest.mark.parametrize(("preset", "widths"), [("stm", (128, 512, 256)), ("stm_narrow", (32, 64, 32))])
def test_model_presets_instantiate(tmp_path, preset, widths):
    import hydra

    cfg = compose_finetune_cfg(tmp_path, [f"model={preset}", "model.backbone.arch=crw"])
    module = hydra.utils.instantiate(cfg.model)
    net = module.net
    assert (net.query_key.out_channels, net.query_value.out_channels, net.decoder.pred.in_channels) == widths
    assert module.optimizer_factory.keywords["lr"] == 1e-5 and module.loss.top_p == 1.0
    assert net.memory_encoder.extra_in_channels == 2 and net.query_encoder.freeze_bn
