"""Cross-entropy for segmentation, optionally bootstrapped: the mean over the hardest pixels only."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BootstrappedCrossEntropy"]


class BootstrappedCrossEntropy(nn.Module):
    """Pixel-wise cross-entropy averaged over the ``p`` fraction of labelled pixels with the
    highest loss in the batch. ``p`` is 1 (plain cross-entropy) until ``start_step``, then falls
    linearly to ``top_p`` at ``end_step``.

    Args:
        top_p: the fraction kept at the end (1.0: plain cross-entropy throughout).
        start_step, end_step: the ramp, in optimizer steps.
        ignore_index: target value excluded (255: DAVIS void).

    ``forward(logits (B, C, H, W), target (B, H, W) int64, *, step=0)`` -> scalar.
    """

    def __init__(self, *, top_p: float = 1.0, start_step: int = 0, end_step: int = 0, ignore_index: int = 255) -> None:
        super().__init__()
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        if end_step < start_step:
            raise ValueError(f"end_step ({end_step}) must not precede start_step ({start_step})")
        self.top_p, self.start_step, self.end_step, self.ignore_index = top_p, start_step, end_step, ignore_index

    def fraction(self, step: int) -> float:
        """The fraction of pixels kept at ``step``."""
        if step < self.start_step:
            return 1.0
        if step >= self.end_step:
            return self.top_p
        return 1.0 + (self.top_p - 1.0) * (step - self.start_step) / (self.end_step - self.start_step)

    def forward(self, logits: Tensor, target: Tensor, *, step: int = 0) -> Tensor:
        p = self.fraction(step)
        if p >= 1.0:
            return F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        losses = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
        losses = losses[target != self.ignore_index]
        if losses.numel() == 0:
            return logits.sum() * 0.0
        k = max(1, math.ceil(p * losses.numel()))
        return losses.topk(k).values.mean()
