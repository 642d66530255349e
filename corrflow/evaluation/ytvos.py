"""Score YouTube-VOS results locally, where ground truth exists; otherwise say where to upload.

The validation and test splits publish only the first mask of each object, so their scores come
from the challenge server: upload the ``submission.zip`` that ``tools/propagate.py task=ytvos``
writes (``Annotations/<video>/<frame>.png``). Locally, a held-out part of the *training* split
(every listed frame annotated; pass its video list as ``task.dataset.split_file``) is scored:

* each object (its id in ``meta.json``) over the frames ``meta.json`` asks predictions for that
  come after the frame where it entered (that frame gave its mask, so it is not scored): J (region
  IoU; 1 where both are empty) and F (boundary F-measure) per frame, with the DAVIS metric code
  (:mod:`corrflow.metrics.davis`), averaged over the frames;
* objects are *seen* when their class occurs in the videos of ``seen_meta`` (by default the
  training split's ``meta.json``) that are not being scored, else *unseen*;
  J-seen, F-seen, J-unseen, F-unseen are means over those objects, and ``Overall`` their mean,
  as the official table. Without classes (or ``seen_meta``), only J, F and J&F are given.

Output, in ``output_dir``: ``ytvos_results-<split>.csv`` (the global row) and
``ytvos_per-object-<split>.csv`` (``Video,Object,Category,Seen,J,F``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corrflow.data.vos.ytvos import read_meta
from corrflow.evaluation.davis import _csv_text, _write_atomic
from corrflow.metrics.davis import boundary_f_measure, jaccard
from corrflow.utils.io import read_indexed_png

__all__ = ["UPLOAD", "YTVOSObjectScores", "YTVOSScores", "evaluate_ytvos"]

log = logging.getLogger(__name__)

UPLOAD = {
    "2018": "https://competitions.codalab.org/competitions/19544",
    "2019": "https://competitions.codalab.org/competitions/20127",
}


@dataclass(frozen=True)
class YTVOSObjectScores:
    sequence: str
    object_id: int
    category: str | None
    seen: bool | None
    j_mean: float
    f_mean: float
    frames: int


@dataclass(frozen=True)
class YTVOSScores:
    per_object: tuple[YTVOSObjectScores, ...]

    def as_dict(self) -> dict[str, float]:
        """``J&F``, ``J``, ``F`` over every object; with classes also ``J-seen`` .. ``F-unseen`` and ``Overall``."""
        j = float(np.mean([o.j_mean for o in self.per_object]))
        f = float(np.mean([o.f_mean for o in self.per_object]))
        out = {"J&F": (j + f) / 2, "J": j, "F": f}
        if all(o.seen is not None for o in self.per_object):
            parts = []
            for group, flag in (("seen", True), ("unseen", False)):
                objs = [o for o in self.per_object if o.seen is flag]
                for m, attr in (("J", "j_mean"), ("F", "f_mean")):
                    v = float(np.mean([getattr(o, attr) for o in objs])) if objs else math.nan
                    out[f"{m}-{group}"] = v
                    parts.append(v)
            out["Overall"] = float(np.nanmean(parts)) if not all(math.isnan(p) for p in parts) else math.nan
        return out


def _seen_categories(seen_meta: Path | None, scored: set[str]) -> set[str] | None:
    if seen_meta is None or not seen_meta.is_file():
        return None
    return {o.category for v, objs in read_meta(seen_meta).items() if v not in scored for o in objs if o.category}


def evaluate_ytvos(
    results_dir: str | os.PathLike,
    root: str | os.PathLike,
    *,
    split: str = "valid",
    sequences: Sequence[str] | None = None,
    output_dir: str | os.PathLike | None = None,
    seen_meta: str | None = "train/meta.json",
    year: str = "2019",
    progress: bool = True,
) -> YTVOSScores | None:
    """Score ``results_dir/<video>/<frame>.png`` against ``<root>/<split>/Annotations`` where every
    frame to score is annotated; otherwise log and print where to upload, and return None.

    Args:
        results_dir: the predictions (palette PNGs named as the frames, original ids).
        root: the YouTube-VOS folder; ``split`` its sub-folder with ``meta.json``.
        sequences: the videos to score (default: every video of ``meta.json``).
        output_dir: where the CSVs go (default ``results_dir``).
        seen_meta: a ``meta.json`` (relative to ``root`` unless absolute) whose other videos' classes
            are the seen ones; None: no seen/unseen split.
        year: '2018' or '2019', for the upload address.

    Raises:
        FileNotFoundError: a result frame missing. ValueError: a result of another size than its ground truth.
    """
    root, results_dir = Path(root), Path(results_dir)
    meta = read_meta(root / split / "meta.json")
    names = list(sequences) if sequences is not None else sorted(meta)
    ann_root = root / split / "Annotations"
    asked = {v: sorted({f for o in meta[v] for f in o.frames}) for v in names}
    missing = next(((v, f) for v in names for f in asked[v] if not (ann_root / v / f"{f}.png").is_file()), None)
    if missing is not None:
        zip_hint = results_dir.parent / "submission.zip"
        msg = (
            f"YouTube-VOS {split}: no ground truth here (e.g. {ann_root / missing[0] / missing[1]}.png; the split gives only "
            f"each object's first mask), so no local score. Upload {zip_hint} to the challenge server: "
            f"{UPLOAD.get(str(year), UPLOAD['2019'])} (YouTube-VOS {year})"
        )
        log.info(msg)
        print(msg)  # always: it is what the user has to do next
        return None
    seen_path = None if not seen_meta else (Path(seen_meta) if Path(seen_meta).is_absolute() else root / seen_meta)
    seen = _seen_categories(seen_path, set(names))
    objects = []
    for v in names:
        frames = asked[v]
        gt = {f: read_indexed_png(ann_root / v / f"{f}.png") for f in frames}
        pred = {}
        for f in frames:
            path = results_dir / v / f"{f}.png"
            if not path.is_file():
                raise FileNotFoundError(f"result frame missing: {path} (every frame meta.json asks for needs one)")
            pred[f] = read_indexed_png(path)
            if pred[f].shape != gt[f].shape:
                raise ValueError(f"{path}: result is {pred[f].shape[1]}x{pred[f].shape[0]}, its ground truth {gt[f].shape[1]}x{gt[f].shape[0]}")
        for o in meta[v]:
            scored = [f for f in frames if f > o.frames[0]]
            if not scored:
                log.warning("%s: object %d enters at the last asked frame %s; not scored", v, o.id, o.frames[0])
                continue
            g = np.stack([gt[f] == o.id for f in scored])
            p = np.stack([pred[f] == o.id for f in scored])
            is_seen = None if seen is None or o.category is None else o.category in seen
            objects.append(YTVOSObjectScores(v, o.id, o.category, is_seen, float(jaccard(g, p).mean()), float(boundary_f_measure(g, p).mean()), len(scored)))
    if not objects:
        raise ValueError(f"{root / split / 'meta.json'}: no object has a frame to score after the one that gives it")
    scores = YTVOSScores(tuple(objects))
    out = Path(output_dir) if output_dir is not None else results_dir
    g = scores.as_dict()
    _write_atomic(out / f"ytvos_results-{split}.csv", _csv_text([list(g), ["%.3f" % x for x in g.values()]]))
    rows = [["Video", "Object", "Category", "Seen", "J", "F"]]
    rows += [[o.sequence, o.object_id, o.category or "", "" if o.seen is None else int(o.seen), "%.3f" % o.j_mean, "%.3f" % o.f_mean] for o in objects]
    _write_atomic(out / f"ytvos_per-object-{split}.csv", _csv_text(rows))
    log.info("YouTube-VOS %s: %s", split, ", ".join(f"{k} {v:.3f}" for k, v in g.items()))
    return scores
