"""Label maps for propagation: masks and keypoints to and from soft maps on the feature grid.

Grid convention: a frame of (H, W) pixels is padded at the bottom and right (edge-replicated) to
(h * s, w * s) with h = ceil(H / s), w = ceil(W / s), s the feature stride. Feature cell (i, j)
covers pixels [i*s, (i+1)*s) x [j*s, (j+1)*s); its centre is at pixel ((j + 0.5) s - 0.5,
(i + 0.5) s - 0.5), the convention of bilinear resizing with ``align_corners=False``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from corrflow.utils.grid import pad_to_stride

__all__ = [
    "HEATMAP_STYLES",
    "harden_heatmaps",
    "heatmaps_to_keypoints",
    "keypoints_to_heatmaps",
    "labels_to_ids",
    "masks_to_onehot",
    "pool_labels",
    "resize_labels",
    "upsample_labels",
]


def masks_to_onehot(mask: Tensor, ids: Sequence[int]) -> Tensor:
    """One channel per label: channel 0 is background (every id not in ``ids``, void included).

    Args:
        mask: (H, W) integer object ids.
        ids: the object ids, in channel order 1..N.

    Returns:
        (1 + N, H, W) float32 one-hot.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be (H, W), got shape {tuple(mask.shape)}")
    out = torch.zeros(1 + len(ids), *mask.shape, dtype=torch.float32, device=mask.device)
    for ch, i in enumerate(ids, start=1):
        out[ch] = (mask == int(i)).float()
    out[0] = 1.0 - out[1:].sum(0).clamp(max=1.0)
    return out


def pool_labels(labels: Tensor, stride: int) -> Tensor:
    """(D, H, W) pixel labels -> (D, h, w): the share of each label in each feature cell."""
    return F.avg_pool2d(pad_to_stride(labels, stride)[None], stride)[0]


def upsample_labels(labels: Tensor, size: Sequence[int], stride: int) -> Tensor:
    """(D, h, w) feature-grid labels -> (D, H, W): bilinear to the padded frame, then cropped."""
    d, h, w = labels.shape
    up = F.interpolate(labels[None], size=(h * stride, w * stride), mode="bilinear", align_corners=False)[0]
    return up[:, : int(size[0]), : int(size[1])]


def resize_labels(labels: Tensor, size: Sequence[int]) -> Tensor:
    """(D, H, W) -> (D, *size) by plain bilinear resizing (``align_corners=False``, no antialias).

    CRW's label handling: its data loader resizes the one-hot first frame straight to the feature
    grid (``cv2.resize(..., INTER_LINEAR)``, which samples 2 x 2 pixels at each cell centre, so the
    labels stay nearly hard), and its dump resizes predictions straight back to the frame size.
    """
    return F.interpolate(labels[None].float(), size=tuple(int(v) for v in size), mode="bilinear", align_corners=False)[0]


def labels_to_ids(labels: Tensor, ids: Sequence[int]) -> Tensor:
    """(D, H, W) soft labels -> (H, W) int64 ids: arg-max channel, channel 0 -> 0, channel c -> ids[c-1]."""
    lut = torch.tensor([0, *[int(i) for i in ids]], dtype=torch.int64, device=labels.device)
    return lut[labels.argmax(dim=0)]


HEATMAP_STYLES = ("centred", "crw")


def keypoints_to_heatmaps(
    coords: Tensor, visible: Tensor, *, grid: Sequence[int], stride: int, sigma: float = 0.5, style: str = "centred"
) -> Tensor:
    """Keypoints as Gaussian heat maps on the feature grid, plus a background channel.

    ``style='centred'``: each visible keypoint k gives exp(-d^2 / (2 sigma^2)) with d the distance
    in feature cells to its position (pixel x lies at cell (x + 0.5) / stride - 0.5, the grid
    convention of this module), cut to zero beyond 3 sigma and scaled so that its highest cell is
    1 (so the keypoint survives an arg-max feed-back); an invisible one gives an empty map. The
    background is 1 - min(1, sum of the keypoint maps).

    ``style='crw'``: CRW's JHMDB maps (its ``draw_labelmap_np``): pixel x lies at cell x / stride;
    a (6 sigma + 1)-wide window of the Gaussian sampled at whole-cell offsets from its centre is
    pasted with its centre at cell ``trunc(x / stride - 3 sigma) + 3 sigma`` (``trunc`` towards
    zero, as Python's ``int``); every keypoint is drawn where its window touches the grid, and the
    background is 1 where no keypoint map is non-zero, else 0. Decode these with
    ``heatmaps_to_keypoints(..., style='crw')``.

    Args:
        coords: (K, 2) x, y in pixels (0-based).
        visible: (K,) bool ('centred' only: CRW draws every keypoint).
        grid: (h, w) feature grid.
        stride: feature stride in pixels.
        sigma: Gaussian width in feature cells (CRW: 0.5).
        style: 'centred' or 'crw'.

    Returns:
        (1 + K, h, w) float32.
    """
    if style not in HEATMAP_STYLES:
        raise ValueError(f"style must be one of {HEATMAP_STYLES}, got {style!r}")
    h, w = int(grid[0]), int(grid[1])
    if style == "crw":
        return _crw_heatmaps(coords, grid=(h, w), stride=stride, sigma=sigma)
    cells = (coords.float() + 0.5) / stride - 0.5  # (K, 2) in feature cells
    ys = torch.arange(h, dtype=torch.float32, device=coords.device)
    xs = torch.arange(w, dtype=torch.float32, device=coords.device)
    d2 = (xs[None, None, :] - cells[:, 0, None, None]) ** 2 + (ys[None, :, None] - cells[:, 1, None, None]) ** 2
    maps = torch.exp(-d2 / (2 * sigma**2)) * (d2 <= (3 * sigma) ** 2)  # (K, h, w)
    peak = maps.flatten(1).amax(dim=1).clamp(min=torch.finfo(maps.dtype).tiny)
    maps = maps / peak[:, None, None] * visible.to(maps.dtype)[:, None, None]  # each peak is 1
    bg = 1.0 - maps.sum(0, keepdim=True).clamp(max=1.0)
    return torch.cat([bg, maps], dim=0)


def _crw_heatmaps(coords: Tensor, *, grid: tuple[int, int], stride: int, sigma: float) -> Tensor:
    h, w = grid
    size = int(6 * sigma + 1)  # the pasted window's side (4 at sigma 0.5)
    centre = float(size // 2)
    offs = torch.arange(size, dtype=torch.float64)
    window = torch.exp(-((offs[None, :] - centre) ** 2 + (offs[:, None] - centre) ** 2) / (2 * sigma**2))  # (size, size)
    maps = torch.zeros(coords.shape[0], h, w, dtype=torch.float32)
    for k, (x, y) in enumerate(coords.double().tolist()):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue  # no position: an empty map
        px, py = x / stride, y / stride
        ul = (int(px - 3 * sigma), int(py - 3 * sigma))  # int(): truncation towards zero, as CRW
        br = (int(px + 3 * sigma + 1), int(py + 3 * sigma + 1))
        if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
            continue
        x0, x1, y0, y1 = max(0, ul[0]), min(br[0], w), max(0, ul[1]), min(br[1], h)
        maps[k, y0:y1, x0:x1] = window[y0 - ul[1] : y1 - ul[1], x0 - ul[0] : x1 - ul[0]].float()
    bg = (maps.sum(0, keepdim=True) == 0).float()
    return torch.cat([bg, maps], dim=0).to(coords.device)


def heatmaps_to_keypoints(heatmaps: Tensor, *, stride: int, topk: int = 3, style: str = "centred") -> tuple[Tensor, Tensor]:
    """Decode keypoints from propagated heat maps, as CRW does: the mean of the ``topk`` highest
    cells of each map, weighted by their values.

    Args:
        heatmaps: (K, h, w) keypoint maps (no background channel).
        stride: feature stride in pixels.
        topk: how many cells to average.
        style: the cell-to-pixel convention of :func:`keypoints_to_heatmaps`: 'centred', cell
            c at pixel (c + 0.5) * stride - 0.5; 'crw', at pixel c * stride.

    Returns:
        coords (K, 2) float32 x, y in pixels (NaN for an empty map), found (K,) bool.
    """
    if style not in HEATMAP_STYLES:
        raise ValueError(f"style must be one of {HEATMAP_STYLES}, got {style!r}")
    k, h, w = heatmaps.shape
    flat = heatmaps.reshape(k, h * w).float()
    vals, idx = flat.topk(min(topk, h * w), dim=1)  # (K, n)
    total = vals.sum(1, keepdim=True)
    found = total[:, 0] > 0
    weights = vals / total.clamp(min=torch.finfo(vals.dtype).tiny)
    x = (weights * (idx % w).float()).sum(1)
    y = (weights * (idx // w).float()).sum(1)
    cells = torch.stack([x, y], dim=1)
    coords = cells * stride if style == "crw" else (cells + 0.5) * stride - 0.5
    coords[~found] = float("nan")
    return coords, found


def harden_heatmaps(labels: Tensor) -> Tensor:
    """Arg-max feed-back for keypoint maps: each keypoint's map becomes one-hot at its highest
    cell (over space; an empty map stays empty), the background the rest.

    (An arg-max over channels would erase the keypoints, whose maps are below the background
    almost everywhere.)

    Args:
        labels: (B, 1 + K, h, w), channel 0 the background.

    Returns:
        (B, 1 + K, h, w).
    """
    b, d, h, w = labels.shape
    maps = labels[:, 1:].reshape(b, d - 1, h * w)
    peak = maps.argmax(dim=-1, keepdim=True)
    hard = torch.zeros_like(maps).scatter_(-1, peak, 1.0) * (maps.amax(dim=-1, keepdim=True) > 0)
    hard = hard.view(b, d - 1, h, w)
    return torch.cat([1.0 - hard.sum(1, keepdim=True).clamp(max=1.0), hard], dim=1)
