"""The local correlation volume itself: for every target location, its dot product with each
position of a (2M+1)x(2M+1) window around the same location in a reference frame.

Restricted attention (:mod:`corrflow.attention.functional`) turns these logits into a softmax over
the window; MotionSqueeze (:mod:`corrflow.models.motion.motion_squeeze`) and ``tools/flow.py`` read a
displacement off them instead. The window logic is the attention backends': the frame is cut into
T x T tiles whose queries share one key region (:mod:`corrflow.attention.tiled`), one matmul per
tile, and the offsets that land outside the frame are those of
:func:`corrflow.attention.functional.window_validity`. No compiled extension (the original
MotionSqueeze and CorrFlow needed ``spatial_correlation_sampler``'s CUDA op).

Offsets are in row-major (dy, dx) order, dy, dx in [-M, M]: channel ``(dy + M) * (2M + 1) + dx + M``
holds <query[y, x], key[y + dy, x + dx]> (:func:`window_offsets` lists them).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from corrflow.attention.functional import attention_in_float32, window_validity
from corrflow.attention.tiled import _key_regions, tile_queries

__all__ = ["local_correlation", "window_offsets"]


def window_offsets(radius: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """(K, 2) the (dx, dy) offset of each channel of a correlation volume, K = (2M+1)^2, in the
    row-major (dy, dx) order of :func:`local_correlation` and :func:`window_validity`."""
    d = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    return torch.stack([dx.flatten(), dy.flatten()], dim=1)


@lru_cache(maxsize=32)
def _window_index(radius: int, tile: int, device: str) -> Tensor:
    """(T*T, K) long: where each offset of each tile query's window lies in the tile's key region
    (S x S, S = T + 2M, row-major): query (qy, qx), offset (dy, dx) -> (qy + M + dy) * S + qx + M + dx."""
    s = tile + 2 * radius
    q = torch.arange(tile * tile, device=device)
    qy, qx = q // tile, q % tile
    d = torch.arange(2 * radius + 1, device=device)  # dy + M, dx + M
    rows = (qy[:, None, None] + d[None, :, None]) * s  # (TT, 2M+1, 1)
    cols = qx[:, None, None] + d[None, None, :]  # (TT, 1, 2M+1)
    return (rows + cols).reshape(tile * tile, (2 * radius + 1) ** 2)


@attention_in_float32
def _local_correlation(query: Tensor, key: Tensor, *, radius: int, outside: float, tile: int) -> Tensor:
    b, c, h, w = query.shape
    nty, ntx = -(-h // tile), -(-w // tile)
    kk = (2 * radius + 1) ** 2
    q = tile_queries(query, tile).reshape(b, nty * ntx, tile * tile, c)  # (B, nT, TT, C)
    k = _key_regions(key, radius, tile)  # (B, nT, S*S, C)
    region = torch.matmul(q, k.transpose(-1, -2))  # (B, nT, TT, S*S)
    index = _window_index(radius, tile, str(query.device))  # (TT, K)
    corr = region.gather(-1, index.expand(b, nty * ntx, tile * tile, kk))  # (B, nT, TT, K)
    corr = corr.view(b, nty, ntx, tile, tile, kk).permute(0, 5, 1, 3, 2, 4).reshape(b, kk, nty * tile, ntx * tile)
    corr = corr[:, :, :h, :w]
    valid = window_validity(h, w, radius, device=query.device).view(kk, h, w)
    return corr.masked_fill(~valid, outside)


def local_correlation(
    query: Tensor, key: Tensor, *, radius: int, outside: float = -math.inf, tile: int = 8
) -> Tensor:
    """The local correlation volume of ``query`` against ``key``.

    Args:
        query: (B, C, H, W) features of frame t.
        key: (B, C, H, W) features of the frame it is compared with (t + 1).
        radius: M; the window is (2M+1) x (2M+1) cells.
        outside: the value of offsets that land outside the frame (-inf: excluded from any max or
            softmax taken over the window; 0: the zero padding of a correlation sampler).
        tile: the side of the query tiles (memory about B x H x W x (T + 2M)^2 logits).

    Returns:
        (B, (2M+1)^2, H, W): channel ``(dy + M) * (2M+1) + dx + M`` at (y, x) is
        <query[:, :, y, x], key[:, :, y + dy, x + dx]> (``outside`` beyond the frame). Float32 (or
        float64) under the attention package's precision rule
        (:func:`corrflow.attention.functional.attention_in_float32`). Differentiable in both inputs.
    """
    if query.dim() != 4 or key.shape != query.shape:
        raise ValueError(f"query and key must both be (B, C, H, W), got {tuple(query.shape)} and {tuple(key.shape)}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    return _local_correlation(query, key, radius=radius, outside=float(outside), tile=tile)
