"""Smooth random textures and their exact shifts, for the displacement tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def smooth_texture(c: int, h: int, w: int, *, blur: float = 1.5, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """(1, C, H, W) white noise blurred by a Gaussian of ``blur`` cells (periodic)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, c, h, w, generator=g, dtype=dtype)
    r = int(3 * blur)
    t = torch.arange(-r, r + 1, dtype=dtype)
    k = torch.exp(-(t**2) / (2 * blur**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="circular"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="circular"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def crop_shifted(big: Tensor, h: int, w: int, pad: int, dx: float, dy: float) -> Tensor:
    """(1, C, h, w): ``big`` read at (pad + y - dy, pad + x - dx) (bilinear), so that the crop
    ``big[..., pad:pad+h, pad:pad+w]`` at (y, x) is this one at (y + dy, x + dx)."""
    hh, ww = big.shape[-2:]
    ys = torch.arange(h, dtype=big.dtype) + pad - dy
    xs = torch.arange(w, dtype=big.dtype) + pad - dx
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([(2 * gx + 1) / ww - 1, (2 * gy + 1) / hh - 1], dim=-1)[None]
    return F.grid_sample(big, grid, mode="bilinear", align_corners=False)


def match_inside(h: int, w: int, dx: float, dy: float) -> Tensor:
    """(H, W) bool: locations whose true match (y + dy, x + dx) lies inside the frame."""
    ys = torch.arange(h)[:, None] + dy
    xs = torch.arange(w)[None, :] + dx
    return (ys >= 0) & (ys <= h - 1) & (xs >= 0) & (xs <= w - 1)
