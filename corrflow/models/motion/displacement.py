"""Displacements read off a local correlation volume: arg-max, soft-argmax and MotionSqueeze's
kernel soft-argmax, and the confidence (the best correlation). Pure tensor functions.

Every function takes ``corr`` (B, K, H, W) from :func:`corrflow.attention.local_correlation`,
K = (2M+1)^2 window offsets in row-major (dy, dx) order. Two kinds of volume
(:data:`CORRELATIONS`, :func:`correlation_volume`):

- ``relu`` (MotionSqueeze's release, ``arunos728/MotionSqueeze``): the cosines ReLU'd, offsets
  outside the frame 0 (a correlation sampler's zero padding). Every offset, inside the frame or
  not, takes part in the softmax; a window with no positive cosine is all zeros, so the kernel
  soft-argmax reads (0, 0) there and the confidence 0.
- ``signed``: the cosines as they are, offsets outside the frame at -inf (never chosen, no softmax
  weight). A window whose cosines are all negative is read as it is: the kernel soft-argmax then
  weights cells *far* from the best match most (their logits beta * kernel * corr are nearest 0).

Displacements are (B, 2, H, W) in feature cells,
channel 0 the horizontal offset dx (to the right), channel 1 the vertical offset dy (down): the
(u, v) order of optical flow, where frame t's content at (y, x) is found at (y + dy, x + dx) in
the other frame.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from corrflow.attention.correlation import local_correlation, window_offsets

__all__ = [
    "CORRELATIONS",
    "ESTIMATORS",
    "confidence",
    "correlation_volume",
    "displacement_argmax",
    "displacement_kernel_soft_argmax",
    "displacement_soft_argmax",
    "estimate_displacement",
    "motion_from_features",
    "radius_of",
]

ESTIMATORS = ("kernel_soft_argmax", "soft_argmax", "argmax")
CORRELATIONS = ("relu", "signed")


def radius_of(corr: Tensor) -> int:
    """M from a (B, (2M+1)^2, H, W) volume."""
    if corr.dim() != 4:
        raise ValueError(f"corr must be (B, K, H, W), got shape {tuple(corr.shape)}")
    side = math.isqrt(corr.shape[1])
    if side * side != corr.shape[1] or side % 2 == 0:
        raise ValueError(f"corr has {corr.shape[1]} channels, not (2M+1)^2 window offsets")
    return side // 2


def _expected(weights: Tensor, radius: int) -> Tensor:
    """(B, K, H, W) weights summing to 1 over K -> (B, 2, H, W) expected (dx, dy)."""
    offsets = window_offsets(radius, device=weights.device, dtype=weights.dtype)  # (K, 2)
    return torch.einsum("bkhw,kc->bchw", weights, offsets)


def _best_offsets(corr: Tensor, offsets: Tensor) -> Tensor:
    """(B, K, H, W) -> (B, 2, H, W): the offset of the best correlation; among tied best ones the
    offset nearest (0, 0) (a ReLU'd window with no positive cosine is all ties: it reads (0, 0))."""
    corr = corr.detach()
    tied = corr == corr.amax(dim=1, keepdim=True)
    nearness = -(offsets * offsets).sum(1).view(1, -1, 1, 1)  # (1, K, 1, 1)
    best = torch.where(tied, nearness, torch.full_like(corr, -math.inf)).argmax(dim=1)  # (B, H, W)
    return offsets[best].permute(0, 3, 1, 2).contiguous()


def displacement_argmax(corr: Tensor) -> Tensor:
    """(B, K, H, W) -> (B, 2, H, W): the offset of the best correlation (whole cells; no gradient;
    ties: the offset nearest (0, 0))."""
    radius = radius_of(corr)
    return _best_offsets(corr, window_offsets(radius, device=corr.device, dtype=corr.dtype))


def displacement_soft_argmax(corr: Tensor, *, beta: float = 100.0) -> Tensor:
    """(B, K, H, W) -> (B, 2, H, W): the expected offset under softmax(beta * corr) over the window."""
    return _expected(torch.softmax(beta * corr, dim=1), radius_of(corr))


def displacement_kernel_soft_argmax(corr: Tensor, *, sigma: float = 5.0, beta: float = 100.0) -> Tensor:
    """MotionSqueeze's kernel soft-argmax, (B, K, H, W) -> (B, 2, H, W).

    A Gaussian of ``sigma`` cells centred at each location's arg-max offset multiplies the
    correlation (so a second mode far from the best match is suppressed), then the expected offset
    under softmax(beta * gaussian * corr) over the window (beta: MotionSqueeze's "temperature" 100,
    a multiplier of logits that lie in [-1, 1] for L2-normalised features). Differentiable in
    ``corr`` (the arg-max only places the kernel).
    """
    radius = radius_of(corr)
    offsets = window_offsets(radius, device=corr.device, dtype=corr.dtype)  # (K, 2)
    best = _best_offsets(corr, offsets)  # (B, 2, H, W)
    dist2 = ((offsets.T[None, :, :, None, None] - best[:, :, None]) ** 2).sum(1)  # (B, K, H, W)
    kernel = torch.exp(-dist2 / (2.0 * sigma * sigma))
    valid = torch.isfinite(corr)
    logits = (beta * kernel * corr.masked_fill(~valid, 0.0)).masked_fill(~valid, -math.inf)
    return _expected(torch.softmax(logits, dim=1), radius)


def confidence(corr: Tensor) -> Tensor:
    """(B, K, H, W) -> (B, 1, H, W): the best correlation over the window (MotionSqueeze's
    confidence map; in [-1, 1] for L2-normalised features, [0, 1] for a ``relu`` volume)."""
    return corr.amax(dim=1, keepdim=True)


def correlation_volume(feat_t: Tensor, feat_next: Tensor, *, radius: int, correlation: str = "signed") -> Tensor:
    """(B, C, H, W) x 2 -> (B, (2M+1)^2, H, W): the cosines of frame t's features with frame t+1's
    over the window, both L2-normalised over C, as a ``relu`` or ``signed`` volume (see the module
    docstring)."""
    if correlation not in CORRELATIONS:
        raise ValueError(f"correlation must be one of {CORRELATIONS}, got {correlation!r}")
    q, k = torch.nn.functional.normalize(feat_t, dim=1), torch.nn.functional.normalize(feat_next, dim=1)
    if correlation == "relu":
        return torch.relu(local_correlation(q, k, radius=radius, outside=0.0))
    return local_correlation(q, k, radius=radius)


def estimate_displacement(corr: Tensor, *, estimator: str = "kernel_soft_argmax", sigma: float = 5.0, beta: float = 100.0) -> Tensor:
    """(B, K, H, W) -> (B, 2, H, W) with one of :data:`ESTIMATORS`."""
    if estimator == "kernel_soft_argmax":
        return displacement_kernel_soft_argmax(corr, sigma=sigma, beta=beta)
    if estimator == "soft_argmax":
        return displacement_soft_argmax(corr, beta=beta)
    if estimator == "argmax":
        return displacement_argmax(corr)
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


def motion_from_features(
    feat_t: Tensor,
    feat_next: Tensor,
    *,
    radius: int = 7,
    estimator: str = "kernel_soft_argmax",
    sigma: float = 5.0,
    beta: float = 100.0,
    correlation: str = "signed",
) -> tuple[Tensor, Tensor]:
    """Displacement and confidence from frame t's features to frame t+1's.

    Args:
        feat_t, feat_next: (B, C, H, W); L2-normalised here over C (so correlations are cosines).
        radius: the window is (2 radius + 1)^2 cells (MotionSqueeze: 7).
        correlation: 'signed' (``tools/flow.py``'s reading) or 'relu' (MotionSqueeze's release;
            the module's default), see the module docstring.

    Returns:
        (B, 2, H, W) displacement (dx, dy) in cells, (B, 1, H, W) confidence in [-1, 1] ([0, 1] for 'relu').
    """
    corr = correlation_volume(feat_t, feat_next, radius=radius, correlation=correlation)
    return estimate_displacement(corr, estimator=estimator, sigma=sigma, beta=beta), confidence(corr)
