"""Pictures of a displacement field (the standard flow colour wheel, torchvision's
``flow_to_image``) and of a confidence map, at a fixed scale so that frames compare."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision.utils import flow_to_image

__all__ = ["confidence_picture", "flow_picture"]


def flow_picture(disp: Tensor, *, max_norm: float) -> np.ndarray:
    """(2, H, W) displacement (dx, dy) -> (H, W, 3) uint8 on the flow colour wheel (Baker et al.'s
    Middlebury colour coding, as RAFT and torchvision draw it): hue is the direction, saturation
    the length relative to ``max_norm`` (longer vectors are clipped to it), white is no motion.

    ``flow_to_image`` scales each picture by its own longest vector; a sentinel vector of length
    ``max_norm`` appended as one extra column (then cropped) makes that scale fixed.
    """
    if disp.dim() != 3 or disp.shape[0] != 2:
        raise ValueError(f"disp must be (2, H, W), got {tuple(disp.shape)}")
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    d = disp.detach().float().cpu()
    norm = d.norm(dim=0, keepdim=True)
    d = d * (max_norm / norm.clamp_min(max_norm))  # clip lengths at max_norm
    sentinel = torch.zeros(2, d.shape[1], 1)
    sentinel[0, 0, 0] = max_norm
    img = flow_to_image(torch.cat([d, sentinel], dim=2))  # (3, H, W + 1) uint8
    return img[:, :, :-1].permute(1, 2, 0).numpy()


def confidence_picture(conf: Tensor) -> np.ndarray:
    """(H, W) or (1, H, W) confidence in [-1, 1] -> (H, W, 3) uint8 grey, black at 0 or below,
    white at 1."""
    c = conf.detach().float().cpu().reshape(conf.shape[-2:]).clamp(0, 1)
    grey = (c * 255).round().to(torch.uint8).numpy()
    return np.repeat(grey[:, :, None], 3, axis=2)
