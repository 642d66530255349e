"""OSVOS's boundary snapping (Caelles et al. 2017, section 3.3): superpixels from a contour map,
and each superpixel given the label most of its pixels have in the mask, so that the mask's
boundaries move onto the contours.

Superpixels are the catchment basins of the contour map (scikit-image's watershed) flooded from
about ``n_segments`` markers, one per cell of a regular grid, each at its cell's lowest contour
value (as SLIC moves its seeds off edges): basins meet on the ridges of the contour map, so a
superpixel does not cross a strong contour, and no marker sits on one. scikit-image is imported
when snapping is used.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["contour_superpixels", "grid_minima", "snap_labels", "snap_to_contours"]

INSTALL_HINT = "pip install 'scikit-image>=0.21'"


def contour_superpixels(contour: np.ndarray | Tensor, *, n_segments: int = 600, compactness: float = 0.0) -> np.ndarray:
    """Superpixels of a contour map: its watershed from about ``n_segments`` markers, one per cell
    of a regular grid of square cells, at the cell's minimum (the first one, row-major, on a tie).

    Args:
        contour: (H, W) contour strength (higher: a boundary more likely), e.g. the contour
            branch's probabilities.
        n_segments: the number of markers (about as many superpixels).
        compactness: scikit-image's compact watershed (0: the classic watershed, superpixels
            bounded by the contours alone; larger: more regular shapes).

    Returns:
        (H, W) int32 superpixel labels 1..K.

    Raises:
        ImportError: scikit-image is not installed (with the install command).
    """
    try:
        from skimage.segmentation import watershed
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"boundary snapping needs scikit-image: {INSTALL_HINT}") from e
    c = contour.detach().float().cpu().numpy() if isinstance(contour, Tensor) else np.asarray(contour, dtype=np.float32)
    if c.ndim != 2:
        raise ValueError(f"contour must be (H, W), got {c.shape}")
    if n_segments < 1:
        raise ValueError(f"n_segments must be >= 1, got {n_segments}")
    return watershed(c, markers=grid_minima(c, n_segments), compactness=float(compactness)).astype(np.int32)


def grid_minima(contour: np.ndarray, n_segments: int) -> np.ndarray:
    """(H, W) markers 1..K: the minimum of each cell of a grid of square cells of side
    round(sqrt(H * W / n_segments)) (K about ``n_segments``); 0 elsewhere."""
    h, w = contour.shape
    step = max(1, round(math.sqrt(h * w / n_segments)))
    markers = np.zeros((h, w), dtype=np.int32)
    k = 0
    for y0 in range(0, h, step):
        for x0 in range(0, w, step):
            cell = contour[y0 : y0 + step, x0 : x0 + step]
            iy, ix = np.unravel_index(int(np.argmin(cell)), cell.shape)
            k += 1
            markers[y0 + iy, x0 + ix] = k
    return markers


def snap_labels(ids: np.ndarray | Tensor, segments: np.ndarray) -> np.ndarray:
    """Each superpixel takes the label most of its pixels have in ``ids`` (a tie: the smallest label).

    Args:
        ids: (H, W) non-negative integer labels.
        segments: (H, W) superpixel labels (any non-negative integers).

    Returns:
        (H, W) int64 labels.
    """
    ids = ids.detach().cpu().numpy() if isinstance(ids, Tensor) else np.asarray(ids)
    if ids.shape != segments.shape:
        raise ValueError(f"ids {ids.shape} and segments {segments.shape} differ in size")
    ids = ids.astype(np.int64)
    seg = segments.astype(np.int64).ravel()
    counts = np.zeros((int(seg.max()) + 1, int(ids.max()) + 1), dtype=np.int64)
    np.add.at(counts, (seg, ids.ravel()), 1)
    return counts.argmax(axis=1)[segments]


def snap_to_contours(ids: Tensor, contour: Tensor, *, n_segments: int = 600, compactness: float = 0.0) -> Tensor:
    """:func:`snap_labels` on :func:`contour_superpixels`: (H, W) int ids and an (H, W) contour map
    -> (H, W) int64 snapped ids, on ``ids``'s device."""
    segments = contour_superpixels(contour, n_segments=n_segments, compactness=compactness)
    return torch.from_numpy(snap_labels(ids, segments)).to(ids.device)
