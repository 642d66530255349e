"""MotionSqueeze inserted in SegmentationBackbone by config: off by default, the zero start (an
option) that keeps a pretrained backbone's features exactly, after the chosen stage only, trainable
BNs, its settings recorded in the backbone's config and rebuilt from it."""

from __future__ import annotations

import functools

import pytest
import torch

from corrflow.models.backbone import SegmentationBackbone
from corrflow.models.motion.motion_squeeze import MotionSqueeze
from tests.test_models_backbone import corrflow_ckpt  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

MS = functools.partial(MotionSqueeze, n_frames=2, radius=2)
MS_ZERO = functools.partial(MotionSqueeze, n_frames=2, radius=2, zero_init=True, final_relu=False)


def test_off_by_default_and_no_new_weights() -> None:
    bb = SegmentationBackbone()
    assert bb.motion is None
    assert not any(k.startswith("motion.") for k in bb.state_dict())


def test_zero_start_keeps_pretrained_features(corrflow_ckpt) -> None:  # noqa: F811
    path, _ = corrflow_ckpt
    plain = SegmentationBackbone(init=str(path)).eval()
    with_ms = SegmentationBackbone(init=str(path), motion=MS_ZERO).eval()
    assert isinstance(with_ms.motion, MotionSqueeze) and with_ms.motion.reduce.in_channels == 128  # layer2
    x = torch.rand(4, 3, 32, 48)  # two clips of two frames
    a, b = plain(x), with_ms(x)
    for s in plain.strides:
        torch.testing.assert_close(a[s], b[s])


def test_inserted_after_the_chosen_stage_only() -> None:
    """The maps are the encoder's stages run by hand with the module applied to layer2's output:
    layer1's map (stride 4) is untouched, the stride-8 map is layer3 of MotionSqueeze(layer2)."""
    bb = SegmentationBackbone(arch="crw", motion=MS, motion_after=2).eval()
    e = bb.encoder
    x = torch.rand(4, 3, 32, 48)
    with torch.no_grad():
        feats = bb(x)
        s4 = e.layer1(e.maxpool(e.relu(e.bn1(e.conv1((x - e.mean) / e.std)))))
        plain8 = e.layer3(e.layer2(s4))
        s8 = e.layer3(bb.motion(e.layer2(s4)))
    torch.testing.assert_close(feats[4], s4)
    torch.testing.assert_close(feats[8], s8)
    assert not torch.allclose(s8, plain8)  # the module does change what follows it


def test_motion_batch_norms_train_under_freeze_bn() -> None:
    """A training step updates the motion module's BN statistics, never the frozen encoder's."""
    bb = SegmentationBackbone(motion=MS, freeze_bn=True).train()
    assert bb.motion.blocks[0][1].training and not bb.encoder.bn1.training
    before = {k: v.clone() for k, v in bb.state_dict().items() if k.endswith("running_mean")}
    bb(torch.rand(4, 3, 32, 48) * 3)
    changed = {k for k, v in bb.state_dict().items() if k in before and not torch.equal(v, before[k])}
    assert changed and all(k.startswith("motion.") for k in changed), sorted(changed)
    assert {k for k in before if k.startswith("motion.")} == changed  # every one of the module's


def test_bad_stage_is_named() -> None:
    with pytest.raises(ValueError, match="motion_after"):
        SegmentationBackbone(motion=MS, motion_after=9)


def test_the_motion_settings_are_recorded_and_rebuilt_from_the_config() -> None:
    settings = dict(radius=3, channels=16, estimator="soft_argmax", sigma=2.0, beta=50.0, reduction="bias", correlation="signed",
                    first_kernel=5, widths=(8, 12, 20), final_relu=False, zero_init=False)  # fmt: skip
    bb = SegmentationBackbone(arch="crw", motion=functools.partial(MotionSqueeze, n_frames=2, **settings), motion_after=3, seed=4).eval()
    entry = bb.config["motion"]
    assert entry["type"] == "MotionSqueeze" and entry["after"] == 3
    assert entry["settings"] == {**settings, "widths": [8, 12, 20], "in_channels": 256, "n_frames": 2}
    again = SegmentationBackbone.from_config(bb.config, seed=9).eval()
    assert again.config == bb.config
    again.load_state_dict(bb.state_dict())
    x = torch.rand(4, 3, 32, 48)
    for s, f in bb(x).items():
        torch.testing.assert_close(again(x)[s], f)
    assert "motion" not in SegmentationBackbone(arch="crw").config  # other backbones' configs are unchanged


def test_a_motion_module_without_settings_is_recorded_but_not_rebuilt() -> None:
    bb = SegmentationBackbone(arch="crw", motion=lambda c: torch.nn.Identity())
    assert bb.config["motion"] == {"type": "Identity", "after": 2, "settings": None}
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        SegmentationBackbone.from_config(bb.config)
