"""Tiled exact restricted attention: the portable default off-GPU.

The target frame is cut into T x T tiles. Every tile's queries share one key region: the tile
grown by M on each side, in every reference frame. One batched matmul per tile computes all
logits; a precomputed mask removes offsets beyond M and positions outside the frame; one softmax
runs over all references at once. Exact, built only from matmul and masking (so it runs anywhere,
fast on CPU BLAS), and its memory is about ((T + 2M) / T)^2 times the keys plus the tile logits.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor


@lru_cache(maxsize=64)
def _tile_mask(h: int, w: int, radius: int, tile: int, device: str) -> Tensor:
    """(nTiles, T*T, S*S) bool: which key of a tile's region each of its queries may attend to.

    S = T + 2M. Queries that only exist in the padding (beyond H or W) get an all-True row: their
    outputs are cropped away, and finite logits keep their (zero) gradients free of NaN.
    """
    s = tile + 2 * radius
    nty, ntx = -(-h // tile), -(-w // tile)
    ty = torch.arange(nty, device=device)[:, None, None, None] * tile  # tile origin rows
    tx = torch.arange(ntx, device=device)[None, :, None, None] * tile
    qy = torch.arange(tile * tile, device=device) // tile  # (T*T,)
    qx = torch.arange(tile * tile, device=device) % tile
    ky = torch.arange(s * s, device=device) // s - radius  # key offset in tile coords
    kx = torch.arange(s * s, device=device) % s - radius
    near = ((qy[:, None] - ky[None, :]).abs() <= radius) & ((qx[:, None] - kx[None, :]).abs() <= radius)  # (TT, SS)
    gy, gx = ty + ky[None, None, None, :], tx + kx[None, None, None, :]  # absolute key coords
    inside = (gy >= 0) & (gy < h) & (gx >= 0) & (gx < w)  # (nty, ntx, 1, SS)
    q_real = ((ty + qy[None, None, :, None]) < h) & ((tx + qx[None, None, :, None]) < w)  # (nty, ntx, TT, 1)
    mask = (near[None, None] & inside) | ~q_real
    return mask.reshape(nty * ntx, tile * tile, s * s)


def tile_queries(x: Tensor, tile: int) -> Tensor:
    """(N, C, H, W) -> (N, nTy, nTx, T*T, C): the frame cut into T x T tiles, zero-padded at the end."""
    n, c, h, w = x.shape
    nty, ntx = -(-h // tile), -(-w // tile)
    x = F.pad(x, (0, ntx * tile - w, 0, nty * tile - h))
    return x.view(n, c, nty, tile, ntx, tile).permute(0, 2, 4, 3, 5, 1).reshape(n, nty, ntx, tile * tile, c)


def key_region_view(x: Tensor, radius: int, tile: int) -> Tensor:
    """(N, C, H, W) -> (N, C, nTy, nTx, S, S) view, S = T + 2M: each tile's key region (the tile
    grown by M on every side), zero outside the frame."""
    _, _, h, w = x.shape
    nty, ntx = -(-h // tile), -(-w // tile)
    s = tile + 2 * radius
    x = F.pad(x, (radius, radius + ntx * tile - w, radius, radius + nty * tile - h))
    return x.unfold(2, s, tile).unfold(3, s, tile)


def _key_regions(x: Tensor, radius: int, tile: int) -> Tensor:
    """(N, C, H, W) -> (N, nTiles, S*S, C): each tile's key region, zero-padded outside the frame."""
    n, c = x.shape[:2]
    v = key_region_view(x, radius, tile)  # (N, C, nty, ntx, S, S)
    return v.permute(0, 2, 3, 4, 5, 1).reshape(n, v.shape[2] * v.shape[3], v.shape[4] * v.shape[5], c)


def restricted_attention_tiled(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    *,
    radius: int,
    temperature: float = 1.0,
    topk: int | None = None,
    tile: int = 8,
) -> Tensor:
    """See :func:`corrflow.attention.functional.restricted_attention` for the contract."""
    b, c, h, w = query.shape
    r, d = keys.shape[1], values.shape[2]
    nty, ntx = -(-h // tile), -(-w // tile)
    nt, s2 = nty * ntx, (tile + 2 * radius) ** 2
    q = tile_queries(query, tile).view(b, nt, tile * tile, c)
    k = _key_regions(keys.reshape(b * r, c, h, w), radius, tile).view(b, r, nt, s2, c)
    v = _key_regions(values.reshape(b * r, d, h, w), radius, tile).view(b, r, nt, s2, d)
    k = k.permute(0, 2, 1, 3, 4).reshape(b, nt, r * s2, c)
    v = v.permute(0, 2, 1, 3, 4).reshape(b, nt, r * s2, d)
    logits = torch.matmul(q, k.transpose(-1, -2)) / temperature  # (B, nT, TT, R*S2)
    mask = _tile_mask(h, w, radius, tile, str(query.device)).repeat(1, 1, r)  # (nT, TT, R*S2)
    logits = logits.masked_fill(~mask, float("-inf"))
    if topk is not None and topk < r * s2:
        kth = logits.topk(topk, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    out = torch.matmul(torch.softmax(logits, dim=-1), v)  # (B, nT, TT, D)
    out = out.view(b, nty, ntx, tile, tile, d).permute(0, 5, 1, 3, 2, 4).reshape(b, d, nty * tile, ntx * tile)
    return out[:, :, :h, :w].contiguous()
