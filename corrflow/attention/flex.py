"""Restricted attention through PyTorch's FlexAttention with a neighbourhood block mask.

The queries are the H*W target positions; the keys are the R*H*W reference positions laid end to
end, so one softmax spans every reference. The block mask skips key blocks that lie entirely
outside every query's window, so the work stays near the window's size. Compiled on CUDA; on the
CPU FlexAttention runs its eager (dense) path by default, which is useful only to test the mask
(``compiled=True`` compiles it there too, forward only: FlexAttention has no CPU backward).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor


@lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


@lru_cache(maxsize=32)
def _block_mask(h: int, w: int, r: int, radius: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    hw = h * w

    def neighbourhood(b, head, q_idx, kv_idx):
        p = kv_idx % hw
        dy = q_idx // w - p // w
        dx = q_idx % w - p % w
        return (dy.abs() <= radius) & (dx.abs() <= radius)

    return create_block_mask(neighbourhood, B=None, H=None, Q_LEN=hw, KV_LEN=r * hw, device=device)


def _pad_last(x: Tensor, multiple: int = 16) -> Tensor:
    extra = (-x.shape[-1]) % multiple
    return F.pad(x, (0, extra)) if extra else x


def restricted_attention_flex(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    *,
    radius: int,
    temperature: float = 1.0,
    topk: int | None = None,
    compiled: bool | None = None,
) -> Tensor:
    """See :func:`corrflow.attention.functional.restricted_attention` for the contract.

    ``compiled``: run FlexAttention through ``torch.compile`` (None: on CUDA only).
    """
    from torch.nn.attention.flex_attention import flex_attention

    if topk is not None:
        raise ValueError("the flex backend has no top-k; use backend='tiled' (or 'auto', which picks it) for topk")
    b, c, h, w = query.shape
    r, d = keys.shape[1], values.shape[2]
    dtype = query.dtype
    q = _pad_last(query.flatten(2).transpose(1, 2)).unsqueeze(1)  # (B, 1, HW, C')
    k = _pad_last(keys.to(dtype).permute(0, 1, 3, 4, 2).reshape(b, r * h * w, c)).unsqueeze(1)  # (B, 1, R*HW, C')
    v = _pad_last(values.to(dtype).permute(0, 1, 3, 4, 2).reshape(b, r * h * w, d)).unsqueeze(1)  # (B, 1, R*HW, D')
    if compiled is None:
        compiled = query.device.type == "cuda"
    mask = _block_mask(h, w, r, radius, str(query.device))
    fn = _compiled_flex() if compiled else flex_attention
    out = fn(q.contiguous(), k.contiguous(), v.contiguous(), block_mask=mask, scale=1.0 / temperature)
    return out[:, 0, :, :d].transpose(1, 2).reshape(b, d, h, w)
