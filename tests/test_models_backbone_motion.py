"""MotionSqueeze inserted in SegmentationBackbone by config: off by default, a zero start that
keeps a pretrained backbone's features exactly, after the chosen stage only, trainable BNs."""

from __future__ import annotations

import functools

import pytest
import torch

from corrflow.models.backbone import SegmentationBackbone
from corrflow.models.motion_squeeze import MotionSqueeze
from tests.test_models_backbone import corrflow_ckpt  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

MS = functools.partial(MotionSqueeze, n_frames=2, radius=2)


def test_off_by_default_and_no_new_weights() -> None:
    bb = SegmentationBackbone()
    assert bb.motion is None
    assert not any(k.startswith("motion.") for k in bb.state_dict())


def test_zero_start_keeps_pretrained_features(corrflow_ckpt) -> None:  # noqa: F811
    path, _ = corrflow_ckpt
    plain = SegmentationBackbone(init=str(path)).eval()
    with_ms = SegmentationBackbone(init=str(path), motion=MS).eval()
    assert isinstance(with_ms.motion, MotionSqueeze) and with_ms.motion.reduce.in_channels == 128  # layer2
    x = torch.rand(4, 3, 32, 48)  # two clips of two frames
    a, b = plain(x), with_ms(x)
    for s in plain.strides:
        torch.testing.assert_close(a[s], b[s])


def test_inserted_after_the_chosen_stage_only() -> None:
    bb = SegmentationBackbone(arch="crw", motion=MS, motion_after=2).eval()
    plain = SegmentationBackbone(arch="crw").eval()
    with torch.no_grad():
        bb.motion.blocks[-1][-1].weight.fill_(1.0)  # switch the motion features on
    x = torch.rand(4, 3, 32, 48)
    a, b = plain(x), bb(x)
    torch.testing.assert_close(a[4], b[4])  # layer1, before it
    assert not torch.allclose(a[8], b[8])  # layer2 and after
    b[8].sum().backward()
    assert bb.motion.reduce.weight.grad.abs().sum() > 0


def test_motion_batch_norms_train_under_freeze_bn() -> None:
    bb = SegmentationBackbone(motion=MS, freeze_bn=True).train()
    assert bb.motion.blocks[0][1].training and not bb.encoder.bn1.training


def test_bad_stage_is_named() -> None:
    with pytest.raises(ValueError, match="motion_after"):
        SegmentationBackbone(motion=MS, motion_after=9)
