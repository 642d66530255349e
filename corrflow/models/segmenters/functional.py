"""Pure tensor functions of the segmenters: STM's memory read and soft aggregation, OSVOS's
training targets (foreground, mask boundaries)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["foreground_target", "mask_boundaries", "memory_read", "soft_aggregate"]

MASKED_LOGIT = -1.0e4  # the logit of an absent object: probability exactly 0 after a softmax


def memory_read(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    *,
    topk: int | None = None,
    chunk_size: int = 1024,
) -> Tensor:
    """STM's memory read: each query position takes the softmax-weighted average of the memory
    values over all memory positions, weights ``softmax_j(k_M[j] . k_Q / sqrt(d_k))``.

    Args:
        query_key: (B, Ck, h, w).
        memory_key: (B, T, Ck, H, W): T memory frames (H, W may differ from h, w).
        memory_value: (B, T, Cv, H, W).
        topk: keep only the k largest affinities of each query position (the softmax runs over
            those); None (or k >= T*H*W): all of them, through
            ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels on GPUs).
        chunk_size: query positions per chunk (bounds the (chunk, T*H*W) affinity) of the top-k
            read, and of the full read off CUDA: PyTorch's CPU attention materialises the whole
            (h*w, T*H*W) affinity (at 480p, stride 8 and 20 memory frames: 6420 x 128400 float32, 3.3 GB
            an object in one piece, 0.5 GB a chunk of 1024). On CUDA the fused kernels need no chunks.

    Returns:
        (B, Cv, h, w).
    """
    b, ck, h, w = query_key.shape
    if memory_key.ndim != 5 or memory_key.shape[0] != b or memory_key.shape[2] != ck:
        raise ValueError(f"memory_key must be (B={b}, T, Ck={ck}, H, W), got {tuple(memory_key.shape)}")
    if memory_value.ndim != 5 or memory_value.shape[:2] != memory_key.shape[:2] or memory_value.shape[-2:] != memory_key.shape[-2:]:
        raise ValueError(f"memory_value must be (B, T, Cv, H, W) matching memory_key {tuple(memory_key.shape)}, got {tuple(memory_value.shape)}")
    cv = memory_value.shape[2]
    q = query_key.flatten(2).transpose(1, 2)  # (B, hw, Ck)
    k = memory_key.permute(0, 1, 3, 4, 2).reshape(b, -1, ck)  # (B, THW, Ck)
    v = memory_value.permute(0, 1, 3, 4, 2).reshape(b, -1, cv)  # (B, THW, Cv)
    n = k.shape[1]
    if topk is None or topk >= n:
        step = q.shape[1] if q.device.type == "cuda" else chunk_size
        out = torch.cat(
            [F.scaled_dot_product_attention(q[:, None, i : i + step], k[:, None], v[:, None])[:, 0] for i in range(0, q.shape[1], step)], dim=1
        )  # (B, hw, Cv)
    else:
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        scale = 1.0 / math.sqrt(ck)
        parts = []
        for start in range(0, q.shape[1], chunk_size):
            aff = torch.bmm(q[:, start : start + chunk_size], k.transpose(1, 2)) * scale  # (B, c, THW)
            vals, idx = aff.topk(topk, dim=-1)
            weights = torch.zeros_like(aff).scatter_(-1, idx, vals.softmax(dim=-1))
            parts.append(torch.bmm(weights.to(v.dtype), v))
        out = torch.cat(parts, dim=1)
    return out.transpose(1, 2).reshape(b, cv, h, w)


def soft_aggregate(fg_prob: Tensor, *, valid: Tensor | None = None, eps: float = 1e-7) -> Tensor:
    """Merge per-object foreground probabilities into one distribution over background + objects
    (STM's soft aggregation): background = prod_i (1 - p_i); each of the N + 1 probabilities is
    clamped to [eps, 1 - eps] and turned into its logit-odds, log(p / (1 - p)); a softmax of the
    result sums to one with the background.

    Args:
        fg_prob: (B, N, H, W) per-object foreground probabilities, each from its own decoder pass.
        valid: (B, N) bool: objects that exist in each sample (padding objects of a batch are
            False: excluded from the background product, and their logit is -1e4).

    Returns:
        (B, N + 1, H, W) logits; channel 0 is the background.
    """
    if valid is not None:
        if valid.shape != fg_prob.shape[:2]:
            raise ValueError(f"valid must be (B, N) = {tuple(fg_prob.shape[:2])}, got {tuple(valid.shape)}")
        fg_prob = fg_prob * valid[:, :, None, None].to(fg_prob.dtype)
    bg = torch.prod(1 - fg_prob, dim=1, keepdim=True)
    p = torch.cat([bg, fg_prob], dim=1).clamp(eps, 1 - eps)
    logits = torch.log(p / (1 - p))
    if valid is not None:
        keep = torch.cat([valid.new_ones(valid.shape[0], 1), valid], dim=1)[:, :, None, None]
        logits = logits.masked_fill(~keep, MASKED_LOGIT)
    return logits


def foreground_target(ids: Tensor, *, ignore_index: int = 255) -> Tensor:
    """(B, H, W) object ids -> (B, H, W) int64: 1 for every object (any id but 0), 0 background,
    ``ignore_index`` where the ids are void (OSVOS's parent: every object is foreground)."""
    out = (ids != 0).long()
    return out.masked_fill(ids == ignore_index, ignore_index)


def mask_boundaries(ids: Tensor, *, width: int = 1, ignore_index: int = 255) -> Tensor:
    """The boundaries of an id map, OSVOS's contour branch's training target.

    A pixel is on a boundary when its (2 * width + 1)^2 window holds two different ids, void
    excluded (so a boundary runs ``width`` pixels deep on each side of the edge between two labels;
    background counts as a label, void as none).

    Args:
        ids: (B, H, W) integer ids (0 background, 1..N objects, ``ignore_index`` void).

    Returns:
        (B, H, W) int64: 1 boundary, 0 not, ``ignore_index`` at void pixels.
    """
    if ids.ndim != 3:
        raise ValueError(f"ids must be (B, H, W), got {tuple(ids.shape)}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    void = ids == ignore_index
    x = ids.double()[:, None]
    k = 2 * width + 1
    hi = F.max_pool2d(x.masked_fill(void[:, None], -1.0), k, stride=1, padding=width)
    lo = -F.max_pool2d(-x.masked_fill(void[:, None], math.inf), k, stride=1, padding=width)
    edge = (hi != lo) & (hi >= 0) & torch.isfinite(lo)
    return edge[:, 0].long().masked_fill(void, ignore_index)
