"""Negative log-likelihood of quantised colours under a predicted distribution."""

from __future__ import annotations

import torch
from torch import Tensor


def colour_nll(probs: Tensor, target: Tensor, *, eps: float = 1e-8) -> Tensor:
    """Mean -log(p[target] + eps), as the CorrFlow code scores its colour predictions.

    Args:
        probs: (B, K, H, W) probabilities (already a distribution over K; not logits).
        target: (B, H, W) int64 bin indices.
    Returns:
        scalar, computed in float32.
    """
    if probs.shape[0] != target.shape[0] or probs.shape[2:] != target.shape[1:]:
        raise ValueError(f"probs {tuple(probs.shape)} and target {tuple(target.shape)} do not match")
    # contiguous: CPU NLL backward rejects the strided layouts that upsampling can hand it
    return torch.nn.functional.nll_loss(torch.log(probs.float() + eps).contiguous(), target)
