"""The feature-grid convention shared by the segmenters, propagation and flow.

A frame of (H, W) pixels is padded at the bottom and right (edge-replicated) to (h * s, w * s)
with h = ceil(H / s), w = ceil(W / s), s the feature stride: :func:`feature_grid` gives (h, w),
:func:`pad_to_stride` pads a tensor so. Feature cell (i, j) covers pixels [i*s, (i+1)*s) x
[j*s, (j+1)*s).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

__all__ = ["feature_grid", "pad_to_stride"]


def feature_grid(size: Sequence[int], stride: int) -> tuple[int, int]:
    """(h, w) = ceil((H, W) / stride): the feature grid of an (H, W) frame."""
    height, width = size
    return -(-int(height) // stride), -(-int(width) // stride)


def pad_to_stride(x: Tensor, stride: int) -> Tensor:
    """(..., H, W) -> (..., h*s, w*s): pad bottom and right by replicating the last row / column."""
    height, width = x.shape[-2:]
    h, w = feature_grid((height, width), stride)
    ph, pw = h * stride - height, w * stride - width
    if ph == 0 and pw == 0:
        return x
    lead = x.shape[:-2]
    y = F.pad(x.reshape(-1, 1, height, width).float(), (0, pw, 0, ph), mode="replicate")
    return y.to(x.dtype).reshape(*lead, height + ph, width + pw)
