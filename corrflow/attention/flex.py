"""Restricted attention through PyTorch's FlexAttention with a neighbourhood block mask.

The queries are the target positions; the keys are the positions of the R reference frames laid
end to end, so one softmax spans every reference. The block mask skips key blocks that lie
entirely outside every query's window, so the work stays near the window's size. Compiled on
CUDA; on the CPU FlexAttention runs its eager (dense) path by default, which is useful only to
test the mask (``compiled=True`` compiles it there too, forward only: FlexAttention has no CPU
backward).

Frame-size buckets: the compiled kernel is specialised to its tensor shapes, and torch.compile
stops compiling a function after ``torch._dynamo.config.recompile_limit`` shapes (8 by default)
and silently runs the dense eager path from then on. So every frame is zero-padded at the bottom
and right to a bucket size (:func:`bucket_size`: multiples of 16 cells, at most about 25 % more
per side), and the mask removes the padding exactly: a real target never sees a padded key, and
the outputs of padded targets are cropped away. The real frame size reaches the mask as a tensor,
not as a constant, so every frame size within one bucket reuses one compiled kernel. Up to
``MAX_COMPILED_SHAPES`` distinct bucketed shapes are compiled (the recompile limit is raised to
that for these calls); each new one is logged at INFO.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

BUCKET_QUANTUM = 16  # cells; also makes H*W a multiple of FlexAttention's 128-position blocks
MAX_COMPILED_SHAPES = 64  # distinct bucketed shapes compiled before torch.compile falls back
_BLOCK = 128  # FlexAttention's default sparse block size (queries and keys)
_MASK_CHUNK = 64  # query blocks dilated at once while building a block mask
_compiled_shapes: set[tuple] = set()


def bucket_size(n: int, *, quantum: int = BUCKET_QUANTUM) -> int:
    """The padded length of a frame side of ``n`` cells: the next multiple of ``step`` >= n.

    ``step`` is ``quantum`` up to 4 x quantum cells, then grows with n (a quarter of the power of
    two below n): 16, 32, 48, 64, 80, ..., 128, 160, 192, 224, 256, 320, ... So there are at most
    four buckets per octave, and a side grows by less than 25 % (and by less than ``quantum``
    cells up to 4 x quantum).

    >>> [bucket_size(n) for n in (1, 16, 17, 60, 65, 107, 129, 214)]
    [16, 16, 32, 64, 80, 112, 160, 224]
    """
    if n < 1:
        raise ValueError(f"a frame side must be at least 1 cell, got {n}")
    step = max(quantum, 1 << max(math.ceil(math.log2(n)) - 3, 0))
    return -(-n // step) * step


@lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def neighbourhood_mask_mod(hp: int, wp: int, radius: int, real: Tensor):
    """FlexAttention ``mask_mod`` of restricted attention on a padded (hp, wp) grid.

    Query index q is a position of the padded target frame; key index kv a position of the R
    padded references laid end to end. ``real`` is a (2,) int tensor (h, w), the real frame size:
    a real target sees the in-frame keys within ``radius`` (Chebyshev); a padded target (cropped
    later) sees every key within ``radius``, so no row is empty.
    """
    hwp = hp * wp

    def mask_mod(b, head, q_idx, kv_idx):
        p = kv_idx % hwp
        qy, qx, ky, kx = q_idx // wp, q_idx % wp, p // wp, p % wp
        near = ((qy - ky).abs() <= radius) & ((qx - kx).abs() <= radius)
        key_real = (ky < real[0]) & (kx < real[1])
        query_pad = (qy >= real[0]) | (qx >= real[1])
        return near & (key_real | query_pad)

    return mask_mod


def neighbourhood_block_mask(h: int, w: int, r: int, radius: int, device: torch.device | str):
    """The FlexAttention ``BlockMask`` of restricted attention for an (h, w) frame and R references.

    Built directly (not by ``create_block_mask``, which evaluates the mask on the whole
    (Hp*Wp) x (R*Hp*Wp) grid): a query block's reach is its positions dilated by the window, so a
    key block is listed exactly when some pair in the two blocks is allowed. Every listed block is
    partial (``mask_mod`` runs on it); the window is narrower than a block row, so full blocks are
    rare. Sizes are padded to :func:`bucket_size`.
    """
    from torch.nn.attention.flex_attention import BlockMask

    hp, wp = bucket_size(h), bucket_size(w)
    hwp = hp * wp
    nb = hwp // _BLOCK  # blocks per frame: hp and wp are multiples of 16, so hwp is of 256
    pos = torch.arange(hwp, device=device)
    real = (((pos // wp) < h) & ((pos % wp) < w)).float()  # (HWp,)
    dense = torch.empty(nb, nb, dtype=torch.bool, device=device)  # (query blocks, key blocks of one reference)
    for b0 in range(0, nb, _MASK_CHUNK):
        blocks = torch.arange(b0, min(nb, b0 + _MASK_CHUNK), device=device)
        member = ((pos[None] // _BLOCK) == blocks[:, None]).float()  # (n, HWp): each query block's positions
        both = torch.stack([member * real, member * (1 - real)], 1).view(-1, 1, hp, wp)
        reach = F.max_pool2d(both, 2 * radius + 1, stride=1, padding=radius).view(-1, 2, hwp) > 0  # dilated by the window
        sees = (reach[:, 0] & (real > 0)) | reach[:, 1]  # (n, HWp): keys some query of the block may see
        dense[b0 : b0 + len(blocks)] = sees.view(len(blocks), nb, _BLOCK).any(-1)
    dense = dense.repeat(1, r)  # every reference has the same layout
    num = dense.sum(-1, dtype=torch.int32)
    idx = torch.argsort((~dense).to(torch.int8), dim=-1, stable=True).to(torch.int32)  # allowed blocks first, in order
    real_hw = torch.tensor([h, w], device=device, dtype=torch.int64)
    return BlockMask.from_kv_blocks(
        num[None, None],
        idx[None, None],
        BLOCK_SIZE=_BLOCK,
        mask_mod=neighbourhood_mask_mod(hp, wp, radius, real_hw),
        seq_lengths=(hwp, r * hwp),
    )


@lru_cache(maxsize=32)
def _block_mask(h: int, w: int, r: int, radius: int, device: str):
    return neighbourhood_block_mask(h, w, r, radius, device)


def _pad_last(x: Tensor, multiple: int = 16) -> Tensor:
    extra = (-x.shape[-1]) % multiple
    return F.pad(x, (0, extra)) if extra else x


def _note_compiled_shape(key: tuple) -> None:
    if key in _compiled_shapes:
        return
    _compiled_shapes.add(key)
    if len(_compiled_shapes) > MAX_COMPILED_SHAPES:
        logger.warning(
            "FlexAttention has met %d bucketed shapes (limit %d); torch.compile now runs new ones on its "
            "slow dense eager path. Use backend='tiled' or 'triton' for so many frame sizes.",
            len(_compiled_shapes), MAX_COMPILED_SHAPES,
        )  # fmt: skip
    else:
        logger.info("FlexAttention compiles for a new shape (B, R, C', D', Hp, Wp, radius, dtype, device, grad) = %s", key)


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

    ``compiled``: run FlexAttention through ``torch.compile`` (None: on CUDA only). Frames are
    padded to :func:`bucket_size` (exactly: the padding is masked out and cropped).
    """
    from torch.nn.attention.flex_attention import flex_attention

    if topk is not None:
        raise ValueError("the flex backend has no top-k; use backend='tiled' (or 'auto', which picks it) for topk")
    b, c, h, w = query.shape
    r, d = keys.shape[1], values.shape[2]
    hp, wp = bucket_size(h), bucket_size(w)
    dtype = query.dtype
    pad = (0, wp - w, 0, hp - h)
    q = _pad_last(F.pad(query, pad).flatten(2).transpose(1, 2)).unsqueeze(1)  # (B, 1, HWp, C')
    k = F.pad(keys.to(dtype).reshape(b * r, c, h, w), pad).view(b, r, c, hp * wp)
    k = _pad_last(k.permute(0, 1, 3, 2).reshape(b, r * hp * wp, c)).unsqueeze(1)  # (B, 1, R*HWp, C')
    v = F.pad(values.to(dtype).reshape(b * r, d, h, w), pad).view(b, r, d, hp * wp)
    v = _pad_last(v.permute(0, 1, 3, 2).reshape(b, r * hp * wp, d)).unsqueeze(1)  # (B, 1, R*HWp, D')
    if compiled is None:
        compiled = query.device.type == "cuda"
    mask = _block_mask(h, w, r, radius, str(query.device))
    if compiled:
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, keys, values))
        _note_compiled_shape((b, r, q.shape[-1], v.shape[-1], hp, wp, radius, str(dtype), str(query.device), grad))
        limit = max(torch._dynamo.config.recompile_limit, MAX_COMPILED_SHAPES)
        with torch._dynamo.config.patch(recompile_limit=limit):
            out = _compiled_flex()(q.contiguous(), k.contiguous(), v.contiguous(), block_mask=mask, scale=1.0 / temperature)
    else:
        out = flex_attention(q.contiguous(), k.contiguous(), v.contiguous(), block_mask=mask, scale=1.0 / temperature)
    out = out[:, 0, :, :d].transpose(1, 2).reshape(b, d, hp, wp)  # (B, D, Hp, Wp)
    return out[:, :, :h, :w]
