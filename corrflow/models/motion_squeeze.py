"""MotionSqueeze (Kwon et al., ECCV 2020): motion features from the local correlation of
consecutive frames' features, added back to the features, trained with no flow supervision.

For the frames of a clip, each frame's features are reduced to ``channels`` (a 1x1 convolution)
and L2-normalised; frame t is correlated with frame t+1 over a (2M+1)^2 window
(:func:`corrflow.attention.local_correlation`, M = 7); a displacement (kernel soft-argmax by
default, :mod:`corrflow.models.displacement`) and a confidence (the best correlation) are read
off; (dx / M, dy / M, confidence) go through four depthwise-separable convolution blocks to the
input's width and are added to the input features. The last frame has no successor: it gets the
motion of the pair before it (as the original does).

The last block's final BatchNorm starts at zero scale (``zero_init``), so a freshly inserted
module leaves a pretrained backbone's features exactly as they were.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from corrflow.models.displacement import ESTIMATORS, motion_from_features

__all__ = ["MotionSqueeze"]


class _SeparableBlock(nn.Sequential):
    """Depthwise 3x3 (+BN, ReLU), then pointwise 1x1 (+BN, ReLU unless ``last``)."""

    def __init__(self, cin: int, cout: int, *, last: bool = False) -> None:
        layers = [
            nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if not last:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class MotionSqueeze(nn.Module):
    """Motion features for a clip's frames, added to their features.

    Args:
        in_channels: C, the width of the features it is inserted on.
        n_frames: T, frames per clip; the batch holds B clips of T consecutive frames each.
        channels: width of the correlated features (64).
        radius: M; the window is (2M+1)^2 cells (7: 15 x 15).
        estimator: 'kernel_soft_argmax' (MotionSqueeze's), 'soft_argmax' or 'argmax'.
        sigma: the kernel's standard deviation in cells (5).
        beta: softmax inverse temperature on correlations in [-1, 1] (MotionSqueeze's 100).
        widths: the hidden widths of the first three separable blocks (the fourth gives C).
        zero_init: the output starts at zero (see the module docstring).

    Shapes: ``forward(x)`` with x (B*T, C, H, W), frames of a clip consecutive in the batch,
    returns (B*T, C, H, W) = x + motion features.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        n_frames: int,
        channels: int = 64,
        radius: int = 7,
        estimator: str = "kernel_soft_argmax",
        sigma: float = 5.0,
        beta: float = 100.0,
        widths: tuple[int, int, int] = (32, 64, 128),
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if n_frames < 2:
            raise ValueError(f"MotionSqueeze needs clips of at least 2 frames, got n_frames={n_frames}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if radius < 1:
            raise ValueError(f"radius must be >= 1, got {radius}")
        self.n_frames, self.radius, self.estimator, self.sigma, self.beta = int(n_frames), int(radius), estimator, sigma, beta
        self.reduce = nn.Conv2d(in_channels, channels, 1)
        dims = (3, *widths, in_channels)
        self.blocks = nn.Sequential(*(_SeparableBlock(dims[i], dims[i + 1], last=i == 3) for i in range(4)))
        if zero_init:
            nn.init.zeros_(self.blocks[-1][-1].weight)

    def motion(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B*T, C, H, W) -> displacement (B*T, 2, H, W) in cells and confidence (B*T, 1, H, W),
        frame t against t+1 (the last frame repeats the pair before it)."""
        bt, c, h, w = x.shape
        if bt % self.n_frames:
            raise ValueError(f"the batch ({bt} frames) is not whole clips of n_frames={self.n_frames}")
        f = self.reduce(x).view(bt // self.n_frames, self.n_frames, -1, h, w)
        cur, nxt = f[:, :-1].flatten(0, 1), f[:, 1:].flatten(0, 1)  # (B*(T-1), c, H, W)
        disp, conf = motion_from_features(cur, nxt, radius=self.radius, estimator=self.estimator, sigma=self.sigma, beta=self.beta)
        return self._repeat_last(disp), self._repeat_last(conf)

    def _repeat_last(self, y: Tensor) -> Tensor:
        y = y.view(-1, self.n_frames - 1, *y.shape[1:])  # (B, T-1, ...)
        return torch.cat([y, y[:, -1:]], dim=1).flatten(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        disp, conf = self.motion(x)
        return x + self.blocks(torch.cat([disp / self.radius, conf], dim=1).to(x.dtype))
