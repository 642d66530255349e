"""Decoded frames to the models' input: (T, H, W, 3) uint8 arrays to resized float tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["resize_frames"]


def resize_frames(frames: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, h, w) float in [0, 1], bilinear (no antialias, as cv2.resize)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=False).clamp_(0, 1)
    return x
