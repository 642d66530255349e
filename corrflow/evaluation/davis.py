"""Score DAVIS-layout results (palette PNGs) against DAVIS ground truth, as the official code does.

Layout read::

    <davis_root>/Annotations/<resolution>/<seq>/<frame>.png    ground truth (palette or grayscale PNGs)
    <davis_root>/ImageSets/<year>/<split>.txt                  one sequence name per line (DAVIS-2017
                                                               folders), else ImageSets/<resolution>/<split>.txt
                                                               (the DAVIS-2016 release; frame-pair lines)
    <results_dir>/<seq>/<frame>.png                            results, same frame names

``single_object`` (on for ``year="2016"`` unless given) is the DAVIS-2016 rule: any non-zero
pixel, in ground truth and results, is the one object. The 2016 release's grayscale masks (object
= 255) and the 2016 split of a DAVIS-2017 folder (palette ids) therefore score the same. Off, it is
the DAVIS-2017 rule: ids 1..N are objects and 255 is void (background).

Frames are the sorted ground-truth PNGs; the first and last are not scored and need no
result, nor do the frames named in ``exclude_frames`` (given keyframes). The metric rules are in :mod:`corrflow.metrics.davis`. Output, in ``output_dir``
(default ``results_dir``), in the official columns and ``%.3f`` format::

    global_results-<split>.csv          J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay
    per-sequence_results-<split>.csv    Sequence,J-Mean,F-Mean   (rows <seq>_<object id>)

Both are written atomically (temporary file, then rename), so a crash leaves either the old
files or the new ones, never half a table.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from corrflow.data.vos.davis import VOID_ID, find_split_file, read_split_file
from corrflow.metrics.davis import (
    GLOBAL_COLUMNS,
    DAVISScores,
    ObjectScores,
    boundary_f_measure,
    davis_object_ids,
    jaccard,
    score_davis_sequence,
    temporal_statistics,
)
from corrflow.utils.io import read_indexed_png

__all__ = [
    "DAVISScores",
    "evaluate_davis",
    "format_davis_tables",
    "read_davis_split",
    "write_davis_csvs",
]

log = logging.getLogger(__name__)

YEARS = ("2016", "2017")
PER_SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")


def read_davis_split(davis_root: str | os.PathLike, split: str, *, year: str = "2017", resolution: str = "480p") -> list[str]:
    """Sequence names of ``<davis_root>/ImageSets/<year>/<split>.txt``, or of the DAVIS-2016
    release's ``ImageSets/<resolution>/<split>.txt`` (see :func:`corrflow.data.vos.davis.read_split_file`)."""
    return read_split_file(find_split_file(Path(davis_root), year=year, split=split, resolution=resolution))


def _read_frames(paths: Sequence[Path], *, kind: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read id maps into a (T, H, W) uint8 array; all frames must share one size."""
    frames = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(
                f"{kind} frame missing: {path} (results need one PNG per scored ground-truth frame, "
                f"with the ground truth's file name)"
            )
        mask = read_indexed_png(path)
        if shape is None:
            shape = mask.shape
        elif mask.shape != shape:
            raise ValueError(
                f"{path}: {kind} mask is {mask.shape[1]}x{mask.shape[0]} (WxH), "
                f"expected {shape[1]}x{shape[0]} like the ground truth"
            )
        frames.append(mask)
    return np.stack(frames)


def _score_sequence(
    results_dir: Path, gt_dir: Path, seq: str, *, single_object: bool, exclude: Sequence[int] = (), late_objects: bool = False
) -> list[ObjectScores]:
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"ground truth of sequence {seq!r} not found: {gt_dir}")
    gt_paths = sorted(gt_dir.glob("*.png"))
    if len(gt_paths) < 3:
        raise ValueError(
            f"{gt_dir}: {len(gt_paths)} ground-truth frames; at least 3 are needed "
            f"(first and last are not scored)"
        )
    seq_results = results_dir / seq
    if not seq_results.is_dir():
        raise FileNotFoundError(f"results of sequence {seq!r} not found: {seq_results}")
    gt = _read_frames(gt_paths, kind="ground-truth")
    kept = [t for t in range(1, len(gt_paths) - 1) if t not in set(exclude)]
    if not kept:
        raise ValueError(f"{gt_dir}: every scored frame (1..{len(gt_paths) - 2}) was given as a keyframe; nothing is left to score")
    result_paths = [seq_results / gt_paths[t].name for t in kept]
    pred = _read_frames(result_paths, kind="result", shape=gt.shape[1:])
    if late_objects and not single_object:
        return _score_late_objects(gt, pred, kept, seq=seq, gt_paths=gt_paths, result_paths=result_paths)
    n_objects = len(davis_object_ids(gt[0], single_object=single_object))
    if not single_object and n_objects > 0:
        for path, frame in zip(result_paths, pred):
            extra = sorted(set(np.unique(frame).tolist()) - set(range(n_objects + 1)))
            if extra:
                raise ValueError(
                    f"{path}: result ids {extra} are not objects of the ground truth "
                    f"(ids 1..{n_objects} in {gt_paths[0]})"
                )
    try:  # the first and last frames bracket the kept ones (score_davis_sequence scores what lies between)
        return score_davis_sequence(gt[[0, *kept, len(gt) - 1]], pred, sequence=seq, single_object=single_object)
    except ValueError as e:  # what is left to fail here is the ground truth (e.g. no object)
        raise ValueError(f"{gt_paths[0]}: {e}") from e


def _score_late_objects(gt: np.ndarray, pred: np.ndarray, kept: Sequence[int], *, seq: str, gt_paths, result_paths) -> list[ObjectScores]:
    """Objects that may enter after the first frame: each object (every id of any ground-truth
    frame, void 255 excluded) is scored over the kept frames after the first one that holds it
    (that frame gave its mask). An object with no such frame is not scored (a warning says so)."""
    ids = sorted(set(np.unique(gt).tolist()) - {0, VOID_ID})
    for path, frame in zip(result_paths, pred):
        extra = sorted(set(np.unique(frame).tolist()) - {0, *ids})
        if extra:
            raise ValueError(f"{path}: result ids {extra} are not objects of the ground truth in {gt_paths[0].parent} (ids {ids})")
    scores = []
    for i in ids:
        entry = int(np.flatnonzero((gt == i).any(axis=(1, 2)))[0])
        rows = [n for n, t in enumerate(kept) if t > entry]
        if not rows:
            log.warning("%s: object %d enters at frame %d, after the last scored frame; not scored", seq, i, entry)
            continue
        g, p = gt[[kept[n] for n in rows]] == i, pred[rows] == i
        jm, jr, jd = temporal_statistics(jaccard(g, p))
        fm, fr, fd = temporal_statistics(boundary_f_measure(g, p))
        scores.append(ObjectScores(seq, i, jm, jr, jd, fm, fr, fd))
    return scores


def _fmt(value: float) -> str:
    """pandas ``to_csv(float_format='%.3f')`` formatting: NaN is an empty field."""
    return "" if math.isnan(value) else "%.3f" % value


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(rows)
    return buf.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_davis_csvs(scores: DAVISScores, output_dir: str | os.PathLike, *, split: str) -> tuple[Path, Path]:
    """Write ``global_results-<split>.csv`` and ``per-sequence_results-<split>.csv`` atomically.

    Returns:
        (global csv path, per-sequence csv path).
    """
    output_dir = Path(output_dir)
    global_path = output_dir / f"global_results-{split}.csv"
    per_seq_path = output_dir / f"per-sequence_results-{split}.csv"
    g = scores.as_dict()
    global_rows = [list(GLOBAL_COLUMNS), [_fmt(g[c]) for c in GLOBAL_COLUMNS]]
    seq_rows = [list(PER_SEQUENCE_COLUMNS)] + [[o.name, _fmt(o.j_mean), _fmt(o.f_mean)] for o in scores.per_object]
    _write_atomic(per_seq_path, _csv_text(seq_rows))
    _write_atomic(global_path, _csv_text(global_rows))
    return global_path, per_seq_path


def format_davis_tables(scores: DAVISScores, *, split: str) -> str:
    """The global and per-sequence tables as aligned text (what :func:`evaluate_davis` prints)."""

    def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        return [" ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in [header, *rows]]

    g = scores.as_dict()
    lines = [f"--------------------------- Global results for {split} ---------------------------"]
    lines += table(GLOBAL_COLUMNS, [[f"{g[c]:.3f}" for c in GLOBAL_COLUMNS]])
    lines += ["", f"---------- Per sequence results for {split} ----------"]
    lines += table(PER_SEQUENCE_COLUMNS, [[o.name, f"{o.j_mean:.3f}", f"{o.f_mean:.3f}"] for o in scores.per_object])
    return "\n".join(lines)


def no_results_message(results_dir: Path, sequences: Sequence[str]) -> str:
    """What to say when ``results_dir`` holds a folder for none of ``sequences``: that it holds no
    results, what it holds instead, and the layout expected."""
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in results_dir.iterdir() if not p.name.startswith("."))
    names = f"{', '.join(list(sequences)[:3])}{', ...' if len(sequences) > 3 else ''}"
    if entries:
        held = (f"none of the {len(sequences)} sequences to score ({names}) has a folder there "
                f"(it holds {', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''})")  # fmt: skip
    else:
        held = f"it is empty ({len(sequences)} sequences to score: {names})"
    return (
        f"{results_dir} holds no results: {held}. Expected one folder a sequence with one palette PNG a "
        f"frame, named as the ground truth: {results_dir}/<sequence>/<frame>.png, e.g. "
        f"{results_dir / sequences[0] / '00000.png'} (tools/propagate.py writes them under <output_dir>/results)"
    )


def evaluate_davis(
    results_dir: str | os.PathLike,
    davis_root: str | os.PathLike,
    *,
    sequences: Sequence[str] | None = None,
    split: str | None = None,
    year: str = "2017",
    resolution: str = "480p",
    output_dir: str | os.PathLike | None = None,
    progress: bool = True,
    single_object: bool | None = None,
    exclude_frames: Mapping[str, Sequence[int]] | None = None,
    late_objects: bool = False,
) -> DAVISScores:
    """Score semi-supervised DAVIS results with the official rules; write the official CSVs.

    Args:
        results_dir: folder of ``<seq>/<frame>.png`` palette PNGs (ids as in ground truth).
        davis_root: DAVIS folder holding ``Annotations/`` and ``ImageSets/``.
        sequences: sequences to score; overrides ``split``.
        split: name of ``ImageSets/<year>/<split>.txt`` (e.g. ``"val"``); also names the CSVs
            (``"custom"`` when only ``sequences`` is given).
        year: ``"2017"`` or ``"2016"``: where the split file is, and the default of ``single_object``.
        resolution: ``Annotations`` sub-folder, ``"480p"``, ``"1080p"`` or ``"Full-Resolution"``.
        output_dir: where the CSVs go (default ``results_dir``).
        progress: show a progress bar (stderr) and print the result tables (stdout).
        single_object: the DAVIS-2016 rule (any non-zero pixel, in ground truth and results, is
            the one object) when True, the DAVIS-2017 rule (ids 1..N, 255 void) when False;
            None: True for ``year="2016"``.
        exclude_frames: ``{sequence: [frame indices]}`` not scored besides the first and last
            (the given keyframes); their results are not read.
        late_objects: objects may enter after the first frame (DAVIS-2017 rule only): every id of
            any ground-truth frame is an object, scored over the frames after the first that holds it.

    Returns:
        :class:`DAVISScores`: global metrics and one :class:`ObjectScores` per (sequence, object).

    Raises:
        FileNotFoundError: missing split file, sequence ground truth, results folder or result frame;
            a results folder with no sequence's folder (:func:`no_results_message`).
        ValueError: empty split file, result of another size than ground truth, ids that ground
            truth lacks, non-palette result PNG, fewer than 3 frames, no object in the first frame.
    """
    year = str(year)
    if year not in YEARS:
        raise ValueError(f"year must be one of {YEARS}, got {year!r}")
    if single_object is None:
        single_object = year == "2016"
    results_dir, davis_root = Path(results_dir), Path(davis_root)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder not found: {results_dir}")
    if not davis_root.is_dir():
        raise FileNotFoundError(f"DAVIS root not found: {davis_root}")
    if sequences is None:
        if split is None:
            raise ValueError("give sequences=[...] or split='val' (ImageSets/<year>/<split>.txt)")
        sequences = read_davis_split(davis_root, split, year=year, resolution=resolution)
    elif isinstance(sequences, str):
        sequences = [sequences]
    if not sequences:
        raise ValueError("no sequence to evaluate")
    gt_root = davis_root / "Annotations" / resolution
    if not gt_root.is_dir():
        raise FileNotFoundError(f"DAVIS annotations not found: {gt_root}")
    if not any((results_dir / seq).is_dir() for seq in sequences):
        raise FileNotFoundError(no_results_message(results_dir, sequences))

    iterator = list(sequences)
    if progress:
        try:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="DAVIS", unit="seq")
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass
    objects: list[ObjectScores] = []
    for seq in iterator:
        seq_scores = _score_sequence(
            results_dir, gt_root / seq, seq, single_object=bool(single_object),
            exclude=(exclude_frames or {}).get(seq, ()), late_objects=late_objects,
        )  # fmt: skip
        log.debug("%s: %s", seq, ", ".join(f"{o.name} J={o.j_mean:.3f} F={o.f_mean:.3f}" for o in seq_scores))
        objects.extend(seq_scores)
    scores = DAVISScores.from_objects(objects)

    name = split if split is not None else "custom"
    paths = write_davis_csvs(scores, output_dir if output_dir is not None else results_dir, split=name)
    log.info(
        "DAVIS %s: J&F %.3f (J %.3f, F %.3f); wrote %s",
        name, scores.jf_mean, scores.j_mean, scores.f_mean, paths[0],
    )
    if progress:
        print(format_davis_tables(scores, split=name))
    return scores
