"""PCK (percentage of correct keypoints) for propagated keypoints, JHMDB protocol.

Matches the JHMDB evaluation of CRW (``ajabri/videowalk``, ``code/eval/eval_pck.py``):

* Ground truth is 0-based pixel coordinates (JHMDB's 1-based ``pos_img`` minus 1).
* The query frame (frame 0 for JHMDB) is not scored; neither is any earlier frame.
* Only visible keypoints are scored. CRW marks a joint invisible (in every frame) when its
  propagated map is empty, which happens when the joint lies outside the first frame (its
  Gaussian, sigma 0.5 feature cells, misses the label map). We take visibility from the
  annotations (:mod:`corrflow.data.keypoints.annotations` reproduces CRW's rule, using the image
  border), and a keypoint that is not visible in the query frame is not scored in any frame
  (there was nothing to propagate).
* The scale of frame t is ``0.6 * ||max - min||`` over the scored keypoints of frame t (the
  diagonal of their bounding box); a keypoint is correct when
  ``||pred - gt|| / scale <= alpha`` (``<=``, as CRW). A frame with zero scale (a single
  scored keypoint) has all its keypoints wrong, as in CRW (where the division gives inf or NaN).
* The dataset PCK pools the normalised distances of all sequences and frames per keypoint,
  takes each keypoint's share of correct ones, and averages over keypoints (CRW's final
  number; keypoints with nothing scored are left out of that mean).

All values are fractions in [0, 1] (CRW prints percentages).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from corrflow.data.keypoints.videos import query_frame_index

__all__ = [
    "normalized_keypoint_distances",
    "pck",
    "pck_from_distances",
    "pck_per_keypoint",
]

SCALE_FACTOR = 0.6


def _as_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64 if name != "visible" else bool)


def normalized_keypoint_distances(pred, gt, visible, *, query_frame: int | None = None) -> np.ndarray:
    """Distances of predicted to ground-truth keypoints, divided by each frame's body scale.

    Args:
        pred: (T, K, 2) predicted x, y in pixels (numpy or torch). Non-finite values count as misses.
        gt: (T, K, 2) ground-truth x, y in pixels.
        visible: (T, K) bool ground-truth visibility.
        query_frame: the frame whose keypoints were given; it and earlier frames are not scored.
            ``None``: the first frame with a visible keypoint (frame 0 for JHMDB).

    Returns:
        (T, K) float64: ``||pred - gt|| / (0.6 * bbox diagonal of frame t's scored keypoints)``;
        NaN where not scored; +inf where scored but the prediction is not finite or the
        frame's scale is zero (both count as wrong).
    """
    pred, gt, visible = _as_numpy(pred, "pred"), _as_numpy(gt, "gt"), _as_numpy(visible, "visible")
    if gt.ndim != 3 or gt.shape[-1] != 2:
        raise ValueError(f"gt must be (T, K, 2), got {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred must have the shape of gt {gt.shape}, got {pred.shape}")
    if visible.shape != gt.shape[:2]:
        raise ValueError(f"visible must be (T, K) = {gt.shape[:2]}, got {visible.shape}")
    if query_frame is None:
        query_frame = query_frame_index(visible)
    n_frames = gt.shape[0]
    if not 0 <= query_frame < n_frames:
        raise ValueError(f"query_frame {query_frame} outside [0, {n_frames})")

    scored = visible & visible[query_frame][None, :]  # (T, K)
    scored[: query_frame + 1] = False
    out = np.full(gt.shape[:2], np.nan)
    for t in np.flatnonzero(scored.any(axis=1)):
        pts = gt[t, scored[t]]  # (n, 2)
        scale = SCALE_FACTOR * np.linalg.norm(pts.max(axis=0) - pts.min(axis=0))
        dist = np.linalg.norm(pred[t, scored[t]] - pts, axis=-1)
        dist[~np.isfinite(dist)] = np.inf
        out[t, scored[t]] = dist / scale if scale > 0 else np.inf
    return out


def pck_per_keypoint(distances: np.ndarray | Iterable[np.ndarray], *, alpha: float) -> np.ndarray:
    """Per-keypoint share of scored entries with normalised distance <= alpha.

    Args:
        distances: (N, K) normalised distances (NaN = not scored), or an iterable of (T_i, K)
            arrays (e.g. one per sequence) that are pooled.

    Returns:
        (K,) float64 in [0, 1]; NaN for a keypoint with nothing scored.
    """
    if not isinstance(distances, np.ndarray):
        distances = np.concatenate([np.asarray(d, dtype=np.float64) for d in distances], axis=0)
    scored = ~np.isnan(distances)
    with np.errstate(invalid="ignore"):
        correct = scored & (np.where(scored, distances, np.inf) <= alpha)
    total = scored.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, correct.sum(axis=0) / np.maximum(total, 1), np.nan)


def pck_from_distances(distances: np.ndarray | Iterable[np.ndarray], *, alpha: float) -> float:
    """PCK@alpha as CRW reports it: the mean over keypoints of the per-keypoint PCK.

    Args:
        distances: (N, K) normalised distances (NaN = not scored) or an iterable of (T_i, K).

    Returns:
        PCK in [0, 1]; NaN if nothing was scored.
    """
    per_kp = pck_per_keypoint(distances, alpha=alpha)
    if np.all(np.isnan(per_kp)):
        return float("nan")
    return float(np.nanmean(per_kp))


def pck(
    pred, gt, visible, *, alpha: float | Sequence[float] = 0.1, query_frame: int | None = None
) -> float | dict[float, float]:
    """PCK@alpha of one sequence (see :func:`normalized_keypoint_distances` for the shapes).

    Returns:
        A float in [0, 1] for one ``alpha``, or ``{alpha: pck}`` for a sequence of alphas.
    """
    dist = normalized_keypoint_distances(pred, gt, visible, query_frame=query_frame)
    if isinstance(alpha, (int, float)):
        return pck_from_distances(dist, alpha=float(alpha))
    return {float(a): pck_from_distances(dist, alpha=float(a)) for a in alpha}
