"""J&F-Mean recomputed from a run's written result PNGs, written out here from the per-frame
J and F of :mod:`corrflow.metrics.davis` (not through :mod:`corrflow.evaluation`): per object,
the mean over frames 1 .. T-2 (the first and last are not scored), then the mean over every
object of every sequence; J&F is the mean of the two."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from corrflow.metrics.davis import boundary_f_measure, jaccard
from corrflow.utils.io import read_indexed_png


def jf_mean_from_files(results: Path, davis_root: Path, sequences: list[str], *, resolution: str = "480p") -> float:
    js, fs = [], []
    for seq in sequences:
        gt_paths = sorted((davis_root / "Annotations" / resolution / seq).glob("*.png"))
        gt = np.stack([read_indexed_png(p) for p in gt_paths])
        pred = np.stack([read_indexed_png(results / seq / p.name) for p in gt_paths[1:-1]])
        assert not (gt == 255).any(), "void pixels: not handled here"
        for obj in sorted(set(np.unique(gt[0]).tolist()) - {0}):
            js.append(jaccard(gt[1:-1] == obj, pred == obj).mean())
            fs.append(boundary_f_measure(gt[1:-1] == obj, pred == obj).mean())
    return (float(np.mean(js)) + float(np.mean(fs))) / 2
