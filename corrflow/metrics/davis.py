"""DAVIS region similarity J, boundary F-measure and their per-object statistics.

The numbers reproduce the official ``davisvideochallenge/davis2017-evaluation`` code
(semi-supervised task) without its OpenCV / scikit-image dependencies; the code is our own.
The rules, as that code applies them:

* **Frames.** The first frame (the given mask) and the last frame are not scored.
* **Objects.** The objects of a sequence are the ids ``1 .. max id`` of the first ground-truth
  frame (after void is removed). An id in that range that is absent from the first frame is
  still scored as an object (the official code does this; DAVIS itself has no such gaps).
* **Void.** Ground-truth pixels labelled 255 count as background: the official semi-supervised
  evaluation sets them to 0 and passes no void mask to the metrics.
* **Results.** A predicted id that ground truth lacks (any id above the number of objects,
  255 included) is an error; an object id that a result never uses is an empty mask.
* **J** is the intersection over union of the object's masks, 1 when the union is empty.
* **F** is the boundary F-measure. Boundaries are one pixel wide, computed as in the official
  ``_seg2bmap`` (a pixel is on the boundary when it differs from its east, south or south-east
  neighbour; neighbours outside the image are ignored, so the image border itself is no
  boundary). There is **no thinning step**: the Python code (unlike the old MATLAB toolbox,
  which called ``bwmorph(..., 'thin')``) thins nothing. Each boundary is dilated by
  ``skimage.morphology.disk(r)`` (OpenCV ``cv2.dilate``; pixels outside the image do not
  dilate), ``r = ceil(0.008 * image diagonal)`` (8 px at 480x854). Precision is the share of
  predicted boundary pixels within the dilated ground-truth boundary, recall the converse.
  Edge cases: no predicted boundary but some ground-truth boundary gives P = 1, R = 0; some
  predicted boundary but none in ground truth gives P = 0, R = 1; neither gives P = R = 1;
  ``F = 2PR / (P + R)``, and 0 when ``P + R = 0``. We dilate with an exact Euclidean distance
  transform on the boundaries' bounding box (a pixel lies in the disk dilation iff its
  distance to the nearest boundary pixel is at most ``r``), which equals the disk dilation.
* **Statistics** over an object's scored frames: mean, recall (share of frames with a value
  ``> 0.5``) and decay: the frames are cut into four overlapping bins at
  ``round(linspace(1, N, 5)) - 1`` (bin ``i`` runs from edge ``i`` to edge ``i + 1``
  inclusive) and decay = mean of the first bin - mean of the last.
* **Global** numbers are plain means over all (sequence, object) pairs, and
  ``J&F = (mean J + mean F) / 2``.

**Deliberate difference from the official code: long videos.** The official decay casts the
bin edges to ``np.uint8``, so with more than 256 scored frames (videos longer than 258 frames)
the edges wrap modulo 256: the last bin becomes empty (decay NaN, and the global decay NaN) for
257-341 scored frames, and silently covers the wrong frames beyond that. We keep the edges as
integers, so decay is correct at any length; for up to 256 scored frames the results are
identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "DAVISScores",
    "ObjectScores",
    "boundary_f_measure",
    "boundary_radius",
    "davis_object_ids",
    "disk",
    "jaccard",
    "score_davis_sequence",
    "seg_to_boundary",
    "temporal_statistics",
]

VOID_ID = 255
DEFAULT_BOUND_TH = 0.008


def disk(radius: int) -> np.ndarray:
    """The disk structuring element of ``skimage.morphology.disk``.

    Returns:
        (2r+1, 2r+1) bool array, True where ``dx**2 + dy**2 <= r**2``.
    """
    if radius < 0 or int(radius) != radius:
        raise ValueError(f"disk radius must be a non-negative integer, got {radius}")
    radius = int(radius)
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def boundary_radius(shape: Sequence[int], *, bound_th: float = DEFAULT_BOUND_TH) -> int:
    """Dilation radius in pixels: ``ceil(bound_th * hypot(H, W))``, or ``bound_th`` if >= 1.

    Args:
        shape: (H, W) of the frame.
    """
    if bound_th >= 1:
        if int(bound_th) != bound_th:
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be an integer, got {bound_th}")
        return int(bound_th)
    height, width = shape[-2], shape[-1]
    return int(math.ceil(bound_th * math.hypot(height, width)))


def seg_to_boundary(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask (the official ``_seg2bmap`` semantics).

    A pixel is a boundary pixel when its value differs from its east, south or south-east
    neighbour. Neighbours beyond the last row / column take the value of the pixel next to
    them (edge replication), so the image border is never a boundary by itself.

    Args:
        mask: (H, W) array; non-zero = foreground.

    Returns:
        (H, W) bool boundary map.
    """
    seg = np.asarray(mask).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"seg_to_boundary expects an (H, W) mask, got shape {seg.shape}")
    padded = np.pad(seg, ((0, 1), (0, 1)), mode="edge")  # (H + 1, W + 1)
    east = padded[:-1, 1:]
    south = padded[1:, :-1]
    south_east = padded[1:, 1:]
    return (seg != east) | (seg != south) | (seg != south_east)


def _dilation_hits(boundary: np.ndarray, other: np.ndarray, radius: int) -> int:
    """Number of ``other`` pixels within Euclidean distance ``radius`` of a ``boundary`` pixel.

    Both (H, W) bool; ``boundary`` must be non-empty. Equals
    ``(other & binary_dilation(boundary, disk(radius))).sum()``.
    """
    rows = np.flatnonzero(boundary.any(axis=1) | other.any(axis=1))
    cols = np.flatnonzero(boundary.any(axis=0) | other.any(axis=0))
    # Crop to the boundaries' bounding box: dilation outside it can hit no `other` pixel.
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    distance = ndimage.distance_transform_edt(~boundary[crop])
    return int(np.count_nonzero(other[crop] & (distance <= radius)))


def _f_measure_2d(gt: np.ndarray, pred: np.ndarray, radius: int) -> float:
    gt_boundary = seg_to_boundary(gt)
    pred_boundary = seg_to_boundary(pred)
    n_gt = int(np.count_nonzero(gt_boundary))
    n_pred = int(np.count_nonzero(pred_boundary))
    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = _dilation_hits(gt_boundary, pred_boundary, radius) / n_pred
        recall = _dilation_hits(pred_boundary, gt_boundary, radius) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def boundary_f_measure(gt: np.ndarray, pred: np.ndarray, *, bound_th: float = DEFAULT_BOUND_TH) -> np.ndarray:
    """Boundary F-measure of binary masks, frame by frame.

    Args:
        gt: (..., H, W) ground-truth masks (non-zero = object).
        pred: (..., H, W) predicted masks, same shape.
        bound_th: boundary tolerance as a fraction of the image diagonal (< 1) or in pixels (>= 1).

    Returns:
        (...) float64 array of F values in [0, 1] (a 0-d array for a single frame).
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim < 2:
        raise ValueError(f"gt and pred must be (..., H, W) of one shape, got {gt.shape} and {pred.shape}")
    radius = boundary_radius(gt.shape, bound_th=bound_th)
    lead = gt.shape[:-2]
    gt2 = gt.reshape(-1, *gt.shape[-2:])
    pred2 = pred.reshape(-1, *pred.shape[-2:])
    out = np.array([_f_measure_2d(g, p, radius) for g, p in zip(gt2, pred2)], dtype=np.float64)
    return out.reshape(lead)


def jaccard(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Region similarity J (intersection over union) of binary masks, frame by frame.

    Args:
        gt: (..., H, W) ground-truth masks (non-zero = object).
        pred: (..., H, W) predicted masks, same shape.

    Returns:
        (...) float64 array; 1 where the union is empty.
    """
    gt, pred = np.asarray(gt).astype(bool), np.asarray(pred).astype(bool)
    if gt.shape != pred.shape or gt.ndim < 2:
        raise ValueError(f"gt and pred must be (..., H, W) of one shape, got {gt.shape} and {pred.shape}")
    inter = np.count_nonzero(gt & pred, axis=(-2, -1))
    union = np.count_nonzero(gt | pred, axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return np.asarray(j, dtype=np.float64)


def temporal_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall and decay of one object's per-frame scores (official binning, fixed for >256).

    Args:
        values: (N,) per-frame J or F of the scored frames, N >= 1. NaNs are ignored.

    Returns:
        (mean, recall, decay): recall = share of frames with value > 0.5; decay = mean of the
        first of four overlapping bins minus mean of the last (edges ``round(linspace(1, N, 5)) - 1``).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    n = values.size
    if n == 0:
        raise ValueError("temporal_statistics needs at least one scored frame")
    mean = float(np.nanmean(values))
    recall = float(np.nanmean(values > 0.5))
    # int64 edges: the official code casts to uint8 here, which wraps beyond 256 frames.
    edges = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
    first = values[edges[0] : edges[1] + 1]
    last = values[edges[3] : edges[4] + 1]
    decay = float(np.nanmean(first) - np.nanmean(last))
    return mean, recall, decay


@dataclass(frozen=True)
class ObjectScores:
    """Scores of one (sequence, object) pair over its scored frames."""

    sequence: str
    object_id: int
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float
    j_frames: tuple[float, ...] = ()
    f_frames: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        """The official per-sequence row name, ``<sequence>_<object id>``."""
        return f"{self.sequence}_{self.object_id}"


GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


@dataclass(frozen=True)
class DAVISScores:
    """Global DAVIS metrics (means over all (sequence, object) pairs) and the per-object table."""

    jf_mean: float
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float
    per_object: tuple[ObjectScores, ...]

    @classmethod
    def from_objects(cls, objects: Sequence[ObjectScores]) -> DAVISScores:
        """Aggregate per-object scores: plain means, ``J&F = (mean J + mean F) / 2``."""
        objects = tuple(objects)
        if not objects:
            raise ValueError("no (sequence, object) pairs to aggregate")

        def mean(attr: str) -> float:
            return float(np.mean([getattr(o, attr) for o in objects]))

        j_mean, f_mean = mean("j_mean"), mean("f_mean")
        return cls(
            jf_mean=(j_mean + f_mean) / 2.0,
            j_mean=j_mean,
            j_recall=mean("j_recall"),
            j_decay=mean("j_decay"),
            f_mean=f_mean,
            f_recall=mean("f_recall"),
            f_decay=mean("f_decay"),
            per_object=objects,
        )

    def as_dict(self) -> dict[str, float]:
        """Global metrics keyed by the official column names (``J&F-Mean``, ``J-Mean``, ...)."""
        values = (self.jf_mean, self.j_mean, self.j_recall, self.j_decay, self.f_mean, self.f_recall, self.f_decay)
        return dict(zip(GLOBAL_COLUMNS, values))


def davis_object_ids(first_gt: np.ndarray, *, single_object: bool = False) -> list[int]:
    """Object ids of a sequence from its first ground-truth frame.

    Args:
        first_gt: (H, W) id map of the first annotated frame.
        single_object: DAVIS-2016 mode: one object, id 1 (any non-zero pixel).

    Returns:
        ``[1, ..., max id]`` with void (255) treated as background (official semantics), or
        ``[1]`` in single-object mode when the frame has any non-zero pixel. Empty if none.
    """
    first_gt = np.asarray(first_gt)
    if single_object:
        return [1] if np.any(first_gt != 0) else []
    ids = first_gt[first_gt != VOID_ID]
    top = int(ids.max()) if ids.size else 0
    return list(range(1, top + 1))


def score_davis_sequence(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    sequence: str = "",
    single_object: bool = False,
    bound_th: float = DEFAULT_BOUND_TH,
    keep_frames: bool = False,
) -> list[ObjectScores]:
    """Score one sequence's predicted id maps against ground truth, all DAVIS rules applied.

    Args:
        gt: (T, H, W) integer id maps of ground truth, all frames (T >= 3); 255 = void.
        pred: (T, H, W) predicted id maps (frames 0 and T-1 are ignored), or (T - 2, H, W)
            holding only the scored frames 1 .. T-2.
        sequence: name used in the returned scores and in error messages.
        single_object: DAVIS-2016 mode: any non-zero id, in gt and pred, is the one object.
        bound_th: boundary tolerance of F (see :func:`boundary_f_measure`).
        keep_frames: also return the per-frame J and F values.

    Returns:
        One :class:`ObjectScores` per object id, in id order.

    Raises:
        ValueError: fewer than 3 frames, shape mismatch, no object in the first frame, or
            predicted ids that ground truth lacks.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    where = f"sequence {sequence!r}: " if sequence else ""
    if gt.ndim != 3 or gt.shape[0] < 3:
        raise ValueError(
            f"{where}ground truth must be (T, H, W) with T >= 3 (first and last frames are not "
            f"scored), got {gt.shape}"
        )
    scored_gt = gt[1:-1]
    if pred.shape == gt.shape:
        pred = pred[1:-1]
    if pred.shape != scored_gt.shape:
        raise ValueError(
            f"{where}prediction shape {pred.shape} matches neither {gt.shape} "
            f"nor the scored frames {scored_gt.shape}"
        )
    object_ids = davis_object_ids(gt[0], single_object=single_object)
    if not object_ids:
        hint = ""
        if not single_object and np.any(gt[0] == VOID_ID):
            hint = (
                f" (only void, {VOID_ID}, under the DAVIS-2017 rule; the DAVIS-2016 release's grayscale masks mark "
                f"the object with {VOID_ID}: score them with the single-object rule, year 2016)"
            )
        raise ValueError(f"{where}the first ground-truth frame contains no object{hint}")
    if not single_object:
        extra = sorted(set(np.unique(pred).tolist()) - {0, *object_ids})
        if extra:
            raise ValueError(
                f"{where}results contain ids {extra} that ground truth lacks (objects are {object_ids}; "
                f"ids above the number of objects, and 255, are errors)"
            )
    scores = []
    for object_id in object_ids:
        if single_object:
            g, p = scored_gt != 0, pred != 0
        else:  # void (255) equals no object id, so it is background
            g, p = scored_gt == object_id, pred == object_id
        j = jaccard(g, p)
        f = boundary_f_measure(g, p, bound_th=bound_th)
        jm, jr, jd = temporal_statistics(j)
        fm, fr, fd = temporal_statistics(f)
        scores.append(
            ObjectScores(
                sequence=sequence,
                object_id=object_id,
                j_mean=jm,
                j_recall=jr,
                j_decay=jd,
                f_mean=fm,
                f_recall=fr,
                f_decay=fd,
                j_frames=tuple(j.tolist()) if keep_frames else (),
                f_frames=tuple(f.tolist()) if keep_frames else (),
            )
        )
    return scores
