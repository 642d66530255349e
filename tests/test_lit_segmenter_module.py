"""STMLitModule's training step, its IoU metric and the segmentation picture."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from corrflow.lit.segmentation_images import segmentation_panel
from corrflow.lit.segmenter_module import STMLitModule, mean_object_iou, objects_onehot
from corrflow.losses.bootstrapped_ce import BootstrappedCrossEntropy
from corrflow.models.backbone import SegmentationBackbone
from corrflow.models.segmenters import STMSegmenter

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_module() -> STMLitModule:
    torch.manual_seed(0)
    return STMLitModule(backbone=SegmentationBackbone(arch="crw"), net=partial(STMSegmenter, key_dim=8, value_dim=16, decoder_dim=8))


def test_training_step_segments_each_later_frame_and_sums_the_losses():
    module = tiny_module()
    b, t, h, w = 2, 3, 32, 32
    masks = torch.zeros(b, t, h, w, dtype=torch.int64)
    masks[0, :, 4:12, 4:12], masks[0, :, 20:28, 20:28] = 1, 2  # two objects
    masks[1, :, 8:20, 8:20] = 1  # one object: its second channel is padding
    masks[1, 2, 0:2] = 255  # void
    batch = {"frames": torch.rand(b, t, 3, h, w), "masks": masks, "n_objects": torch.tensor([2, 1])}
    out = module.model_step(batch)
    assert out["preds"].shape == (b, t, h, w) and torch.equal(out["preds"][:, 0], masks[:, 0])
    assert int(out["preds"][1].max()) <= 1  # the padding object is never predicted
    torch.testing.assert_close(out["loss"], out["loss_1"] + out["loss_2"])
    out["loss"].backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == [], missing
    assert 0 <= float(out["iou"]) <= 1


def test_frame_c_is_segmented_from_a_memory_of_a_and_b():
    """Swapping frame B's content changes C's prediction only through the memory."""
    module = tiny_module().eval()
    masks = torch.zeros(1, 3, 32, 32, dtype=torch.int64)
    masks[:, :, 8:16, 8:16] = 1
    frames = torch.rand(1, 3, 3, 32, 32)
    with torch.no_grad():
        a = module.model_step({"frames": frames, "masks": masks, "n_objects": torch.tensor([1])})
        frames2 = frames.clone()
        frames2[:, 1] = torch.rand(3, 32, 32)
        b = module.model_step({"frames": frames2, "masks": masks, "n_objects": torch.tensor([1])})
    assert not torch.allclose(a["loss_2"], b["loss_2"])  # frames A and C, and A's mask, are the same


def test_loss_is_injected():
    module = STMLitModule(backbone=SegmentationBackbone(arch="crw"), net=partial(STMSegmenter, key_dim=8, value_dim=16, decoder_dim=8),
                          loss=BootstrappedCrossEntropy(top_p=0.1))  # fmt: skip
    assert module.loss.top_p == 0.1
    assert isinstance(tiny_module().loss, BootstrappedCrossEntropy) and tiny_module().loss.top_p == 1.0


def test_mean_object_iou_hand_computed():
    target = torch.tensor([[[1, 1, 0, 0], [2, 2, 2, 255]]])  # (1, 2, 4)
    pred = torch.tensor([[[1, 0, 0, 0], [2, 2, 0, 2]]])
    # object 1: inter 1, union 2 -> 0.5; object 2: inter 2, union 3 -> 2/3 (the void pixel ignored)
    iou = mean_object_iou(pred, target, torch.tensor([[True, True]]))
    assert float(iou) == pytest.approx((0.5 + 2 / 3) / 2)
    assert objects_onehot(target, 2).shape == (1, 2, 2, 4) and objects_onehot(target, 2)[0, 1].sum() == 3


def test_segmentation_panel_layout():
    pictures = {"frames": torch.rand(3, 3, 3, 16, 20), "masks": torch.randint(0, 3, (3, 3, 16, 20)), "preds": torch.randint(0, 3, (3, 3, 16, 20))}
    panel = segmentation_panel(pictures, max_clips=2)
    # 2 clips x 3 rows (frames, ground truth, prediction), 3 columns, 2-pixel padding
    assert panel.shape == (3, 6 * 16 + 7 * 2, 3 * 20 + 4 * 2)
    assert 0 <= float(panel.min()) and float(panel.max()) <= 1
