"""Dense reference for restricted attention: the full (HW x R*HW) affinity with a window mask.

Quadratic in the frame size: for tests (in float64) and tiny inputs only.
"""

from __future__ import annotations

import torch
from torch import Tensor


def restricted_attention_reference(
    query: Tensor, keys: Tensor, values: Tensor, *, radius: int, temperature: float = 1.0, topk: int | None = None
) -> Tensor:
    """See :func:`corrflow.attention.functional.restricted_attention` for the contract."""
    b, c, h, w = query.shape
    r, d = keys.shape[1], values.shape[2]
    q = query.flatten(2).transpose(1, 2)  # (B, HW, C)
    k = keys.permute(0, 2, 1, 3, 4).reshape(b, c, r * h * w)  # (B, C, R*HW)
    v = values.permute(0, 1, 3, 4, 2).reshape(b, r * h * w, d)  # (B, R*HW, D)
    logits = torch.bmm(q, k) / temperature  # (B, HW, R*HW)
    yy, xx = torch.meshgrid(torch.arange(h, device=query.device), torch.arange(w, device=query.device), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    near = ((yy[:, None] - yy[None, :]).abs() <= radius) & ((xx[:, None] - xx[None, :]).abs() <= radius)  # (HW, HW)
    near = near.repeat(1, r)  # (HW, R*HW)
    logits = logits.masked_fill(~near, float("-inf"))
    if topk is not None and topk < logits.shape[-1]:
        kth = logits.topk(topk, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    attn = torch.softmax(logits, dim=-1)
    out = torch.bmm(attn, v)  # (B, HW, D)
    return out.transpose(1, 2).reshape(b, d, h, w)


def local_correlation_reference(query: Tensor, key: Tensor, *, radius: int, outside: float = float("-inf")) -> Tensor:
    """Dense reference for :func:`corrflow.attention.correlation.local_correlation`: the full
    (HW x HW) affinity, each window offset read from it by explicit coordinates. (B, K, H, W)."""
    b, c, h, w = query.shape
    full = torch.bmm(query.flatten(2).transpose(1, 2), key.flatten(2))  # (B, HW, HW)
    out = torch.full((b, (2 * radius + 1) ** 2, h, w), outside, dtype=full.dtype, device=full.device)
    k = 0
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            for y in range(h):
                for x in range(w):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        out[:, k, y, x] = full[:, y * w + x, (y + dy) * w + x + dx]
            k += 1
    return out
