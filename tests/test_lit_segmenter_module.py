"""STMLitModule's training step, its IoU metric and the segmentation picture; STM learns a task
it can solve only through its memory, and the memory encoder reads each object's mask where it
should."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from corrflow.lit.segmentation_images import segmentation_panel
from corrflow.lit.segmenter_module import STMLitModule, mean_object_iou, objects_onehot
from corrflow.losses.bootstrapped_ce import BootstrappedCrossEntropy
from corrflow.models.backbone import SegmentationBackbone
from corrflow.models.segmenters import STMSegmenter
from tests.helpers.vos_synthetic import moving_objects

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
    # the logged IoU is the metric's on the step's own predictions
    valid = torch.tensor([[True, True], [True, False]])
    expected = torch.stack([mean_object_iou(out["preds"][:, i], masks[:, i], valid) for i in (1, 2)]).mean()
    torch.testing.assert_close(out["iou"], expected)


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


def two_object_clips(n_clips: int, *, n_frames: int = 3, size: tuple[int, int] = (32, 32)) -> dict:
    """A batch of generated clips, each with two squares of random bright colours moving over a
    textured background (tests/helpers/vos_synthetic.py): which square is object 1 changes from
    clip to clip, so only the memory (frame 0's mask) says which is which."""
    frames, masks = zip(*(moving_objects(n_frames, size, n_objects=2, seed=i) for i in range(n_clips)), strict=True)
    return {
        "frames": torch.from_numpy(np.stack(frames)).permute(0, 1, 4, 2, 3).float() / 255,  # (B, T, 3, H, W)
        "masks": torch.from_numpy(np.stack(masks)).long(),  # (B, T, H, W)
        "n_objects": torch.full((n_clips,), 2),
    }


def test_stm_overfits_generated_clips_through_its_memory():
    """40 Adam steps on 4 two-object clips reach a mean J (IoU) above 0.4 on their later frames
    (0.51 measured). A memory encoder that cannot see the masks (its mask inputs zeroed) stays near
    0.22, and one fed the background channel where the predicted object's should be near 0.37:
    telling the two squares apart needs frame 0's mask."""
    torch.manual_seed(0)
    module = STMLitModule(backbone=SegmentationBackbone(arch="crw", seed=0), net=partial(STMSegmenter, key_dim=16, value_dim=32, decoder_dim=16),
                          optimizer=partial(torch.optim.Adam, lr=1e-3))  # fmt: skip
    optimizer = module.configure_optimizers()
    batch = two_object_clips(4)
    module.train()
    for _ in range(40):
        loss = module.model_step(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()
    with torch.no_grad():
        j = float(module.model_step(batch)["iou"])
    assert j > 0.4, f"mean J after 40 steps: {j:.3f}"


def test_memory_encoder_reads_the_objects_mask_then_the_other_objects():
    """The memory encoder's two extra input channels, for each object, are its own mask and the
    union of the other (existing) objects' masks, in that order: a swap, or the background in
    place of the mask, is learnable from scratch (the overfitting test above passes with either),
    so it is checked here against masks built by hand."""
    net = STMSegmenter(backbone=SegmentationBackbone(arch="crw", seed=0), key_dim=8, value_dim=16, decoder_dim=8)
    seen = []
    net.memory_encoder.extra_conv.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    h, w = 16, 24
    prob = torch.zeros(2, 3, h, w)
    prob[0, 0, 0:4, 0:4], prob[0, 1, 8:12, 8:16], prob[0, 2, 2:6, 18:22] = 1.0, 0.75, 1.0
    prob[1, 0, 4:10, 4:10] = 1.0
    prob[1, 1, 0:2, :] = 1.0  # sample 1's second object does not exist (valid False): not an "other"
    valid = torch.tensor([[True, True, True], [True, False, False]])
    with torch.no_grad():
        net.encode_memory(torch.rand(2, 3, h, w), prob, valid=valid)
    (extra,) = seen
    assert extra.shape == (2 * 3, 2, h, w)  # (B * N, 2, H, W): a multiple of the stride already
    kept = prob * valid[:, :, None, None]
    for b in range(2):
        for k in range(3):
            others = sum(kept[b, j] for j in range(3) if j != k)
            torch.testing.assert_close(extra[b * 3 + k, 0], kept[b, k], msg=f"sample {b}, object {k}: own mask")
            torch.testing.assert_close(extra[b * 3 + k, 1], others.clamp(0, 1), msg=f"sample {b}, object {k}: the others' masks")
