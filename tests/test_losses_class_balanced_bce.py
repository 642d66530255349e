"""OSVOS's class-balanced BCE against hand-computed values, and deep supervision's weighting."""

from __future__ import annotations

import math

import pytest
import torch

from corrflow.losses import ClassBalancedBCE, class_balanced_bce_loss, deep_supervision_loss


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_against_a_hand_computed_image():
    # 4 labelled pixels (1 object, 3 background) and one void pixel that must not count
    logits = torch.tensor([[[2.0, -1.0, 0.0, 3.0, 50.0]]])  # (B=1, H=1, W=5)
    target = torch.tensor([[[1, 0, 0, 0, 255]]])
    beta = 3 / 4  # |Y-| / |Y|
    pos = softplus(-2.0)  # -log sigmoid(2)
    neg = softplus(-1.0) + softplus(0.0) + softplus(3.0)  # -log(1 - sigmoid(x))
    expected = (beta * pos + (1 - beta) * neg) / 4
    got = class_balanced_bce_loss(logits, target)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert ClassBalancedBCE()(logits[:, None], target).item() == pytest.approx(expected, rel=1e-6)


def test_batch_mean_of_per_image_balances_and_float64_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 5, 7, generator=g) * 4
    target = (torch.rand(3, 5, 7, generator=g) > 0.7).long()
    target[1, 0, :3] = 255
    ref = []
    for b in range(3):
        x, t = logits[b, 0].double().flatten(), target[b].flatten()
        keep = t != 255
        x, t = x[keep], t[keep].double()
        beta = (t == 0).double().mean()
        p = torch.sigmoid(x)
        ref.append((-(beta * t * torch.log(p)) - (1 - beta) * (1 - t) * torch.log(1 - p)).sum() / keep.sum())
    torch.testing.assert_close(class_balanced_bce_loss(logits, target), torch.stack(ref).mean().float(), rtol=1e-5, atol=1e-6)


def test_extreme_logits_stay_finite_and_an_image_without_labels_counts_zero():
    logits = torch.tensor([[[1e4, -1e4]], [[3.0, 3.0]]])
    target = torch.tensor([[[0, 1]], [[255, 255]]])
    loss = class_balanced_bce_loss(logits, target)
    assert torch.isfinite(loss)
    # image 0: beta = 1/2, both pixels wrong by 1e4: (0.5 * 1e4 + 0.5 * 1e4) / 2; image 1: 0
    assert loss.item() == pytest.approx((0.5 * 1e4 + 0.5 * 1e4) / 2 / 2)


def test_deep_supervision_weights_the_sides():
    g = torch.Generator().manual_seed(1)
    sides, fused = torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 1, 6, 6, generator=g)
    target = (torch.rand(2, 6, 6, generator=g) > 0.5).long()
    loss = ClassBalancedBCE()
    per_side = [loss(sides[:, s : s + 1], target) for s in range(4)]
    out = deep_supervision_loss(sides, fused, target, side_weight=0.25, loss=loss)
    torch.testing.assert_close(out["loss_sides"], sum(per_side))
    torch.testing.assert_close(out["loss"], 0.25 * sum(per_side) + loss(fused, target))
    assert deep_supervision_loss(sides, fused, target, side_weight=0.0, loss=loss)["loss"] == loss(fused, target)
