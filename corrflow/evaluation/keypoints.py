"""Score propagated keypoints (``<results_dir>/<seq>.npz``) with PCK, JHMDB protocol.

Predictions: ``<results_dir>/<seq>.npz`` holding ``keypoints``, (T, K, 2) float x, y in pixels of
the frames as stored (a sequence name may contain ``/``, e.g. JHMDB's ``<action>/<video>``).
The rules are in :mod:`corrflow.metrics.pck`. The CSV ``pck_results.csv`` (in ``output_dir``,
default ``results_dir``) has one row per sequence and a last row ``mean``: the dataset PCK
(per-keypoint shares pooled over all sequences, then averaged over keypoints, as CRW reports it),
which is not the mean of the sequence rows. Values are fractions in [0, 1], ``%.4f``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corrflow.metrics.pck import normalized_keypoint_distances, pck_from_distances, pck_per_keypoint

__all__ = ["KeypointScores", "evaluate_keypoints", "load_predicted_keypoints"]

log = logging.getLogger(__name__)

CSV_NAME = "pck_results.csv"


@dataclass(frozen=True)
class KeypointScores:
    """PCK at each threshold: dataset-level, per keypoint and per sequence (fractions in [0, 1])."""

    thresholds: tuple[float, ...]
    pck: dict[float, float]
    per_keypoint: dict[float, tuple[float, ...]]
    per_sequence: dict[str, dict[float, float]]

    def as_dict(self) -> dict[str, float]:
        """``{"pck@0.1": ..., "pck@0.2": ...}``."""
        return {f"pck@{t:g}": self.pck[t] for t in self.thresholds}


def load_predicted_keypoints(path: str | os.PathLike, *, n_frames: int, n_keypoints: int) -> np.ndarray:
    """Read ``keypoints`` (T', K, 2) from an ``.npz`` and return its first ``n_frames`` frames.

    Raises:
        FileNotFoundError / ValueError naming the file: missing file or array, wrong shape,
        fewer frames than annotated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"keypoint predictions not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises OSError, ValueError or zipfile errors on bad files
        raise ValueError(f"{path}: cannot read .npz ({e})") from e
    if not hasattr(data, "files"):
        raise ValueError(f"{path}: expected an .npz archive holding 'keypoints', got a single array")
    with data:
        if "keypoints" not in data.files:
            raise ValueError(f"{path}: no 'keypoints' array (found {sorted(data.files)})")
        kp = np.asarray(data["keypoints"], dtype=np.float64)
    if kp.ndim != 3 or kp.shape[1:] != (n_keypoints, 2):
        raise ValueError(f"{path}: 'keypoints' must be (T, {n_keypoints}, 2), got {kp.shape}")
    if kp.shape[0] < n_frames:
        raise ValueError(f"{path}: 'keypoints' has {kp.shape[0]} frames, the annotations have {n_frames}")
    return kp[:n_frames]


def _write_csv_atomic(path: Path, rows: Sequence[Sequence[str]]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else "%.4f" % value


def evaluate_keypoints(
    results_dir: str | os.PathLike,
    annotations: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    thresholds: Sequence[float] = (0.1, 0.2),
    output_dir: str | os.PathLike | None = None,
) -> KeypointScores:
    """PCK of predicted keypoints against annotations; writes ``pck_results.csv``.

    Args:
        results_dir: folder with ``<seq>.npz`` files (array ``keypoints``, (T, K, 2) x, y pixels).
        annotations: ``{seq: (coords (T, K, 2), visible (T, K) bool)}``, e.g. from
            :func:`corrflow.data.keypoints.annotations.load_jhmdb_split` or ``load_keypoints_json``.
            Predictions may have more frames than annotated; the extra ones are ignored.
        thresholds: the alphas of PCK@alpha.
        output_dir: where the CSV goes (default ``results_dir``).

    Returns:
        :class:`KeypointScores`.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder not found: {results_dir}")
    if not annotations:
        raise ValueError("no annotated sequence to evaluate")
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds:
        raise ValueError("give at least one PCK threshold")

    distances: dict[str, np.ndarray] = {}
    for seq, (coords, visible) in annotations.items():
        coords, visible = np.asarray(coords), np.asarray(visible, dtype=bool)
        pred_path = results_dir / f"{seq}.npz"
        pred = load_predicted_keypoints(pred_path, n_frames=coords.shape[0], n_keypoints=coords.shape[1])
        try:
            distances[seq] = normalized_keypoint_distances(pred, coords, visible)
        except ValueError as e:
            raise ValueError(f"sequence {seq!r} ({pred_path}): {e}") from e

    all_dist = list(distances.values())
    scores = KeypointScores(
        thresholds=thresholds,
        pck={t: pck_from_distances(all_dist, alpha=t) for t in thresholds},
        per_keypoint={t: tuple(pck_per_keypoint(all_dist, alpha=t).tolist()) for t in thresholds},
        per_sequence={s: {t: pck_from_distances(d, alpha=t) for t in thresholds} for s, d in distances.items()},
    )
    header = ["Sequence"] + [f"PCK@{t:g}" for t in thresholds]
    rows = [header]
    rows += [[s] + [_fmt(v[t]) for t in thresholds] for s, v in scores.per_sequence.items()]
    rows += [["mean"] + [_fmt(scores.pck[t]) for t in thresholds]]
    out_dir = Path(output_dir) if output_dir is not None else results_dir
    _write_csv_atomic(out_dir / CSV_NAME, rows)
    log.info("PCK %s over %d sequences; wrote %s", scores.as_dict(), len(distances), out_dir / CSV_NAME)
    return scores
