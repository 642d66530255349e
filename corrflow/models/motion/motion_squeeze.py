"""MotionSqueeze (Kwon et al., ECCV 2020): motion features from the local correlation of
consecutive frames' features, added back to the features, trained with no flow supervision.

For the frames of a clip, each frame's features are reduced to ``channels`` and L2-normalised;
frame t is correlated with frame t+1 over a (2M+1)^2 window
(:func:`corrflow.attention.local_correlation`, M = 7); a displacement (kernel soft-argmax by
default, :mod:`corrflow.models.motion.displacement`) and a confidence (the best correlation) are read
off; (dx / M, dy / M, confidence) go through four depthwise-separable convolution blocks to the
input's width and are added to the input features. The last frame has no successor: it gets the
motion of the pair before it (as the original does).

The defaults are the release's (``arunos728/MotionSqueeze``, ``resnet_TSM.py``); the project's
earlier choices stay as options:

- ``reduction``: ``bn_relu`` (the release: a 1x1 conv without bias, BatchNorm, ReLU) or ``bias``
  (a 1x1 conv with a bias, nothing after it);
- ``correlation``: ``relu`` (the release: the cosines ReLU'd, 0 outside the frame, every offset
  in the kernel soft-argmax's softmax and in the confidence) or ``signed`` (the cosines as they
  are, -inf outside the frame: no softmax weight there);
- the feature transformation: the release's depthwise 7x7 first (``first_kernel=7``), widths
  16 / 32 / 64 then C (``widths``), every block ending in BN + ReLU, the last included
  (``final_relu=True``); or ``first_kernel=3``, ``widths=(32, 64, 128)``, ``final_relu=False``;
- the start: every BatchNorm at scale 1 (the release, ``zero_init=False``), or the last BatchNorm
  at scale 0 (``zero_init=True``), so that an inserted module leaves a backbone's features
  exactly as they were.

``zero_init`` needs ``final_relu=False``: a ReLU after a BatchNorm at zero passes no gradient (its
input is exactly 0), so the motion branch would stay off for ever.

Not reproduced: the release's Kaiming-normal (fan-out) initialisation of these convolutions
(PyTorch's default here; a BatchNorm follows each) and its normalisation's epsilon
(x / sqrt(|x|^2 + 1e-6); here x / max(|x|, 1e-12)).

``config`` holds every constructor argument; ``MotionSqueeze(**config)`` rebuilds the module (the
backbone records it in checkpoints: :meth:`corrflow.models.backbone.SegmentationBackbone.from_config`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from corrflow.models.motion.displacement import CORRELATIONS, ESTIMATORS, motion_from_features

__all__ = ["REDUCTIONS", "MotionSqueeze"]

REDUCTIONS = ("bn_relu", "bias")


class _SeparableBlock(nn.Sequential):
    """Depthwise ``kernel`` x ``kernel`` (+BN, ReLU), then pointwise 1x1 (+BN, and ReLU when ``relu_out``).
    Indices: 0 depthwise conv, 1 BN, 2 ReLU, 3 pointwise conv, 4 BN, 5 ReLU (when ``relu_out``)."""

    def __init__(self, cin: int, cout: int, *, kernel: int = 3, relu_out: bool = True) -> None:
        layers = [
            nn.Conv2d(cin, cin, kernel, padding=kernel // 2, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if relu_out:
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
        beta: softmax inverse temperature on the correlations (MotionSqueeze's 100).
        reduction: 'bn_relu' (the release) or 'bias' (see the module docstring).
        correlation: 'relu' (the release) or 'signed'.
        first_kernel: the first block's depthwise kernel (the release's 7; 3 the earlier variant).
        widths: the hidden widths of the first three separable blocks (the fourth gives C): the
            release's (16, 32, 64).
        final_relu: the last block ends in BN + ReLU, as every block (the release), or BN only.
        zero_init: the last BatchNorm starts at scale 0 (needs ``final_relu=False``).

    Shapes: ``forward(x)`` with x (B*T, C, H, W), frames of a clip consecutive in the batch,
    returns (B*T, C, H, W) = x + motion features.

    Raises:
        ValueError: a bad setting (naming it), or ``zero_init`` with ``final_relu``.
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
        reduction: str = "bn_relu",
        correlation: str = "relu",
        first_kernel: int = 7,
        widths: Sequence[int] = (16, 32, 64),
        final_relu: bool = True,
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if n_frames < 2:
            raise ValueError(f"MotionSqueeze needs clips of at least 2 frames, got n_frames={n_frames}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if radius < 1:
            raise ValueError(f"radius must be >= 1, got {radius}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if correlation not in CORRELATIONS:
            raise ValueError(f"correlation must be one of {CORRELATIONS}, got {correlation!r}")
        if first_kernel < 1 or first_kernel % 2 == 0:
            raise ValueError(f"first_kernel must be an odd size >= 1, got {first_kernel}")
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths must be three positive widths (the first three blocks'), got {widths}")
        if zero_init and final_relu:
            raise ValueError(
                "zero_init=true needs final_relu=false: a ReLU after a BatchNorm at zero scale passes no gradient, "
                "so the motion features would stay zero"
            )
        self.n_frames, self.radius, self.estimator, self.sigma, self.beta = int(n_frames), int(radius), estimator, float(sigma), float(beta)
        self.correlation = correlation
        self.config: dict[str, Any] = {
            "in_channels": int(in_channels), "n_frames": self.n_frames, "channels": int(channels), "radius": self.radius,
            "estimator": estimator, "sigma": self.sigma, "beta": self.beta, "reduction": reduction, "correlation": correlation,
            "first_kernel": int(first_kernel), "widths": list(widths), "final_relu": bool(final_relu), "zero_init": bool(zero_init),
        }  # fmt: skip
        self.reduce = nn.Conv2d(in_channels, channels, 1, bias=reduction == "bias")
        self.reduce_norm = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True)) if reduction == "bn_relu" else nn.Identity()
        dims = (3, *widths, in_channels)
        self.blocks = nn.Sequential(
            *(
                _SeparableBlock(dims[i], dims[i + 1], kernel=first_kernel if i == 0 else 3, relu_out=i < 3 or final_relu)
                for i in range(4)
            )
        )
        if zero_init:
            nn.init.zeros_(self.last_norm.weight)

    @property
    def last_norm(self) -> nn.BatchNorm2d:
        """The last block's final BatchNorm (before its ReLU when ``final_relu``)."""
        return self.blocks[-1][4]

    def reduced(self, x: Tensor) -> Tensor:
        """(B*T, C, H, W) -> (B*T, channels, H, W): the features that are correlated (before the L2 normalisation)."""
        return self.reduce_norm(self.reduce(x))

    def motion(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B*T, C, H, W) -> displacement (B*T, 2, H, W) in cells and confidence (B*T, 1, H, W),
        frame t against t+1 (the last frame repeats the pair before it)."""
        bt, c, h, w = x.shape
        if bt % self.n_frames:
            raise ValueError(f"the batch ({bt} frames) is not whole clips of n_frames={self.n_frames}")
        f = self.reduced(x).view(bt // self.n_frames, self.n_frames, -1, h, w)
        cur, nxt = f[:, :-1].flatten(0, 1), f[:, 1:].flatten(0, 1)  # (B*(T-1), c, H, W)
        disp, conf = motion_from_features(
            cur, nxt, radius=self.radius, estimator=self.estimator, sigma=self.sigma, beta=self.beta, correlation=self.correlation
        )
        return self._repeat_last(disp), self._repeat_last(conf)

    def _repeat_last(self, y: Tensor) -> Tensor:
        y = y.view(-1, self.n_frames - 1, *y.shape[1:])  # (B, T-1, ...)
        return torch.cat([y, y[:, -1:]], dim=1).flatten(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        disp, conf = self.motion(x)
        return x + self.blocks(torch.cat([disp / self.radius, conf], dim=1).to(x.dtype))
