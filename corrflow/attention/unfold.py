"""The unfold baseline: materialise every key's (2M+1)^2 window with ``F.unfold``.

This is what the original CorrFlow colouriser does (with a compiled correlation sampler for the
logits). Memory grows as C x (2M+1)^2 x HW per reference: kept as the benchmark baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from corrflow.attention.functional import window_validity


def _unfold_window(x: Tensor, radius: int) -> Tensor:
    """(N, C, H, W) -> (N, C, K, H*W): each location's (2M+1)^2 neighbours, zero outside."""
    n, c, h, w = x.shape
    k = 2 * radius + 1
    return F.unfold(x, kernel_size=k, padding=radius).view(n, c, k * k, h * w)


def restricted_attention_unfold(
    query: Tensor, keys: Tensor, values: Tensor, *, radius: int, temperature: float = 1.0, topk: int | None = None
) -> Tensor:
    """See :func:`corrflow.attention.functional.restricted_attention` for the contract."""
    b, c, h, w = query.shape
    r, d = keys.shape[1], values.shape[2]
    kk = (2 * radius + 1) ** 2
    k_unf = _unfold_window(keys.reshape(b * r, c, h, w), radius).view(b, r, c, kk, h * w)
    logits = (query.view(b, 1, c, 1, h * w) * k_unf).sum(2) / temperature  # (B, R, K, HW)
    valid = window_validity(h, w, radius, device=query.device)  # (K, HW)
    logits = logits.masked_fill(~valid, float("-inf")).reshape(b, r * kk, h * w)
    if topk is not None and topk < r * kk:
        kth = logits.topk(topk, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    attn = torch.softmax(logits, dim=1).view(b, r, 1, kk, h * w)
    v_unf = _unfold_window(values.reshape(b * r, d, h, w), radius).view(b, r, d, kk, h * w)
    out = (attn * v_unf).sum(dim=(1, 3))  # (B, D, HW)
    return out.view(b, d, h, w)
