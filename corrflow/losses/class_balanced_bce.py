"""OSVOS's loss: class-balanced binary cross-entropy (Caelles et al. 2017, eq. 2; HED's), and deep
supervision over the side outputs with a weight that decays over training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ClassBalancedBCE", "class_balanced_bce_loss", "deep_supervision_loss"]


def class_balanced_bce_loss(logits: Tensor, target: Tensor, *, ignore_index: int = 255) -> Tensor:
    """Per image, L = -beta * sum_{Y+} log sigmoid(x) - (1 - beta) * sum_{Y-} log(1 - sigmoid(x)),
    beta = |Y-| / |Y| (the share of background among the labelled pixels), divided by |Y|; the mean
    over the batch. An image with no labelled pixel counts 0.

    Note the paper's weighting gives an image without foreground (beta = 1) a zero loss.

    Args:
        logits: (B, 1, H, W) or (B, H, W) foreground logits.
        target: (B, H, W) (or (B, 1, H, W)) 1 foreground, 0 background, ``ignore_index`` unlabelled.

    Returns:
        a scalar (float32).
    """
    x = logits.reshape(logits.shape[0], -1).float()
    t = target.reshape(target.shape[0], -1)
    if x.shape != t.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} hold different pixel counts")
    valid = (t != ignore_index).float()
    pos = (t == 1).float() * valid
    neg = valid - pos
    n = valid.sum(1)
    beta = neg.sum(1) / n.clamp(min=1)
    # -log sigmoid(x) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x): stable for any x
    loss_pos = (F.softplus(-x) * pos).sum(1)
    loss_neg = (F.softplus(x) * neg).sum(1)
    per_image = (beta * loss_pos + (1 - beta) * loss_neg) / n.clamp(min=1)
    return per_image.mean()


class ClassBalancedBCE(nn.Module):
    """:func:`class_balanced_bce_loss` as a module: ``loss(logits, target)`` -> scalar."""

    def __init__(self, *, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return class_balanced_bce_loss(logits, target, ignore_index=self.ignore_index)


def deep_supervision_loss(sides: Tensor, fused: Tensor, target: Tensor, *, side_weight: float, loss: nn.Module) -> dict[str, Tensor]:
    """OSVOS's training loss: ``side_weight * sum_s loss(side_s) + loss(fused)``.

    Args:
        sides: (B, S, H, W) the side outputs' logits.
        fused: (B, 1, H, W) the fused logit.
        target: (B, H, W) 0 / 1 / ignore.
        side_weight: the side outputs' weight (OSVOS: 1 - progress, falling from 1 to 0).
        loss: ``loss(logits (B, 1, H, W), target)`` -> scalar.

    Returns:
        {"loss": the total, "loss_fused": .., "loss_sides": the unweighted sum over the sides}.
    """
    side_losses = [loss(sides[:, s : s + 1], target) for s in range(sides.shape[1])]
    loss_sides = torch.stack(side_losses).sum() if side_losses else fused.new_zeros(())
    loss_fused = loss(fused, target)
    return {"loss": side_weight * loss_sides + loss_fused, "loss_fused": loss_fused, "loss_sides": loss_sides}
