"""Raw Lab colour as features: the no-learning baseline of label propagation."""

from __future__ import annotations

import torch.nn.functional as F
from kornia.color import rgb_to_lab
from torch import Tensor, nn


class LabFeatures(nn.Module):
    """CIE Lab pixels (kornia: L in [0, 100], a and b about [-128, 127]) average-pooled to ``stride``.

    Input (B, 3, H, W) RGB in [0, 1], H and W multiples of ``stride``; output (B, 3, H / s, W / s).
    """

    def __init__(self, *, stride: int = 4) -> None:
        super().__init__()
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = stride
        self.out_dim = 3

    def forward(self, x: Tensor) -> Tensor:
        lab = rgb_to_lab(x.clamp(0.0, 1.0))
        return F.avg_pool2d(lab, self.stride) if self.stride > 1 else lab
