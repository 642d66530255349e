"""Files written before the package was laid out by domain still load: the dotted paths they
record (pickled classes and functions, ``_target_`` strings in ``hyper_parameters`` and in a run's
``.hydra/config.yaml``) are mapped to the modules' new homes (:mod:`corrflow.utils.moved`)."""

from __future__ import annotations

import importlib
import sys
import types
import zipfile
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import get_object

from corrflow.data.video.frame_files import VideoSet
from corrflow.data.vos.davis import DAVISVideo
from corrflow.finetune import _same_stage_run
from corrflow.lit.action_module import ActionLitModule
from corrflow.models.backbone import SegmentationBackbone, checkpoint_kind
from corrflow.models.checkpoint import read_checkpoint
from corrflow.models.motion import displacement, motion_squeeze
from corrflow.models.motion.motion_squeeze import MotionSqueeze
from corrflow.models.motion.video_classifier import VideoClassifier, load_video_classifier
from corrflow.utils.moved import (
    MOVED_MODULES,
    MOVED_NAMES,
    current_path,
    legacy_path,
    upgrade_targets,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_every_moved_module_and_name_has_a_current_home():
    for old, new in MOVED_MODULES.items():
        importlib.import_module(new)
        assert old not in sys.modules or old == "corrflow.data.vos", f"{old} is still a module: no stub at the old path"
    for (old, name), new in MOVED_NAMES.items():
        assert hasattr(importlib.import_module(new), name), f"{old}.{name} -> {new}"


@pytest.mark.parametrize(
    "old, new",
    [
        ("corrflow.data.vos_datamodule.VOSClipDataModule", "corrflow.data.vos.datamodule.VOSClipDataModule"),
        ("corrflow.data.vos.salient_frames", "corrflow.data.vos.annotated.salient_frames"),  # the module that became a package
        ("corrflow.data.vos.clips.VOSClipDataset", "corrflow.data.vos.clips.VOSClipDataset"),  # a current path under it
        ("corrflow.data.datamodule.CorrFlowDataModule", "corrflow.data.pretraining.datamodule.CorrFlowDataModule"),
        ("corrflow.data.davis.DAVISDataset", "corrflow.data.vos.davis.DAVISDataset"),
        ("corrflow.data.davis.VideoSet", "corrflow.data.video.frame_files.VideoSet"),  # a name split out of its module
        ("corrflow.models.video_classifier.VideoClassifier", "corrflow.models.motion.video_classifier.VideoClassifier"),
        ("corrflow.models.quantizer.ColourQuantizer.from_file", "corrflow.models.quantizer.ColourQuantizer.from_file"),
        ("corrflow.propagation.labels.pad_to_stride", "corrflow.utils.grid.pad_to_stride"),
        ("corrflow.propagation.labels.masks_to_onehot", "corrflow.propagation.labels.masks_to_onehot"),
        ("torch.optim.Adam", "torch.optim.Adam"),
    ],
)
def test_current_path(old, new):
    assert current_path(old) == new
    get_object(new)  # what Hydra's instantiate resolves
    if old != new and old != "corrflow.data.vos.clips.VOSClipDataset":
        assert legacy_path(new) == old  # the way back, for hashes of configs that finished runs hold


def test_every_config_target_is_current():
    targets = []

    def walk(node):
        if isinstance(node, dict):
            targets.extend(v for k, v in node.items() if k == "_target_" and isinstance(v, str) and v.startswith("corrflow."))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for path in CONF.rglob("*.yaml"):
        walk(yaml.safe_load(path.read_text()))
    assert len(targets) > 40
    for target in targets:
        assert current_path(target) == target
        get_object(target)


def _msnet(seed: int = 0) -> ActionLitModule:
    torch.manual_seed(seed)
    backbone = SegmentationBackbone(arch="crw", motion=partial(MotionSqueeze, n_frames=2, radius=2, channels=8), seed=seed)
    lit = ActionLitModule(backbone=backbone, net=partial(VideoClassifier, n_classes=3, n_frames=2, dropout=0.2))
    with torch.no_grad():
        lit.net.train()(torch.rand(2, 2, 3, 32, 32))  # running statistics of a batch
    return lit.eval()


def _save_with_old_paths(obj, path: Path, monkeypatch: pytest.MonkeyPatch, moved: dict[str, list[object]]) -> None:
    """``torch.save(obj)`` with the classes and functions of ``moved`` ({old module: objects})
    pickled by their old module path, as the code before the move wrote them."""
    with monkeypatch.context() as m:
        for old, objects in moved.items():
            alias = types.ModuleType(old)
            for o in objects:
                setattr(alias, o.__qualname__, o)
                m.setattr(o, "__module__", old)
            m.setitem(sys.modules, old, alias)
        torch.save(obj, path)
    for old in moved:
        assert old not in sys.modules or old == "corrflow.data.vos"


def _pickle_text(path: Path) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


def test_a_checkpoint_with_old_paths_loads_with_identical_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    lit = _msnet()
    motion = lit.net.backbone.motion
    ckpt = {"state_dict": lit.state_dict(), "global_step": 0}
    lit.on_save_checkpoint(ckpt)
    ckpt["hyper_parameters"] = {  # as Lightning records a module's init arguments, config trees included
        "net": {"_target_": "corrflow.models.video_classifier.VideoClassifier", "_partial_": True, "n_classes": 3},
        "data": {"_target_": "corrflow.data.action_datamodule.ActionVideoDataModule"},
        "losses": [{"_target_": "corrflow.losses.class_balanced_bce.ClassBalancedBCE"}],
    }
    ckpt["pickled"] = {  # objects pickled by class path: a module, a function, a dataclass, a class
        "motion": motion,
        "estimator": displacement.displacement_argmax,
        "video": DAVISVideo(name="bear", frame_paths=(Path("00000.jpg"),), annotation_dir=Path("ann"), single_object=False),
        "video_set": VideoSet,
    }
    old_motion = "corrflow.models.motion_squeeze"
    moved = {
        old_motion: [MotionSqueeze, motion_squeeze._SeparableBlock],
        "corrflow.models.displacement": [displacement.displacement_argmax],
        "corrflow.data.davis": [DAVISVideo, VideoSet],
    }
    path = tmp_path / "old.ckpt"
    _save_with_old_paths(ckpt, path, monkeypatch, moved)
    text = _pickle_text(path)
    assert b"corrflow.models.motion_squeeze" in text and b"corrflow.models.motion.motion_squeeze" not in text
    assert b"corrflow.data.davis" in text and b"corrflow.data.vos.davis" not in text
    with pytest.raises(ModuleNotFoundError, match="corrflow.models.motion_squeeze|corrflow.models.displacement|corrflow.data.davis"):
        torch.load(path, weights_only=False)  # what reading it without the mapping meets

    loaded, meta = read_checkpoint(path)
    assert meta["kind"] == "msnet" and checkpoint_kind(path) == "msnet"
    hp = loaded["hyper_parameters"]
    assert hp["net"]["_target_"] == "corrflow.models.motion.video_classifier.VideoClassifier"
    assert hp["data"]["_target_"] == "corrflow.data.action.datamodule.ActionVideoDataModule"
    assert hp["losses"][0]["_target_"] == "corrflow.losses.class_balanced_bce.ClassBalancedBCE"
    assert get_object(hp["net"]["_target_"]) is VideoClassifier
    pickled = loaded["pickled"]
    assert type(pickled["motion"]) is MotionSqueeze and pickled["estimator"] is displacement.displacement_argmax
    assert pickled["video_set"] is VideoSet and pickled["video"] == ckpt["pickled"]["video"]

    torch.manual_seed(1)
    clip = torch.rand(3, 2, 3, 32, 32)
    feats = torch.rand(4, motion.config["in_channels"], 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(load_video_classifier(path)(clip), lit.net(clip), rtol=0, atol=0)
        torch.testing.assert_close(pickled["motion"].eval()(feats), motion.eval()(feats), rtol=0, atol=0)


def test_upgrade_targets_of_an_omegaconf_tree():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"data": {"_target_": "corrflow.data.vos_datamodule.StaticClipDataModule", "root": "${oc.env:HOME}"}})
    out = upgrade_targets(cfg)
    assert out.data._target_ == "corrflow.data.vos.datamodule.StaticClipDataModule"
    assert OmegaConf.to_container(out, resolve=False)["data"]["root"] == "${oc.env:HOME}"  # interpolations kept


def test_resuming_a_run_saved_with_the_old_data_module_path(tmp_path: Path):
    """``tools/finetune.py ckpt_path=<run>/checkpoints/last.ckpt`` continues in ``<run>`` when the
    run trained the same stage; its config names the data module by the path of its day."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / ".hydra" / "config.yaml").write_text("data:\n  _target_: corrflow.data.vos_datamodule.VOSClipDataModule\n")
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert _same_stage_run(ckpt, "corrflow.data.vos.datamodule.VOSClipDataModule") == run.resolve()
    assert _same_stage_run(ckpt, "corrflow.data.vos.datamodule.StaticClipDataModule") is None
