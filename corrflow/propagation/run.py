"""``propagate(cfg)``: propagate the given labels through every video of a task, write
the predictions, score them, draw them. ``tools/propagate.py`` is its Hydra entry point.

Per video, the task's targets say where labels are given (:class:`~corrflow.propagation.targets.MaskPlan`):
the first frame (the default), the frames where later objects join (YouTube-VOS;
``task.late_objects``; the segmenter's ``join``), or keyframes (``task.keyframes``: forward and
backward passes between them, fused; :mod:`corrflow.propagation.keyframes`). Under torchrun
(``launcher=torchrun``) each rank takes a frame-balanced share of the videos and rank 0 scores
once all have finished (:mod:`corrflow.propagation.distributed`).

What runs on each video is the ``method`` config's per-video segmenter
(:mod:`corrflow.propagation.methods`): label propagation (the default) or a trained segmenter
(``method=stm``); the reading, writing, scoring, drawing and resuming below are the same for all.

Output, under ``cfg.output_dir``::

    results/<seq>/%05d.png | results/<seq>.npz   predictions (see corrflow.propagation.targets)
    results/<seq>.done                            written last: the sequence is finished; names the run that made it
    overlays/<seq>.png, overlays/<seq>.gif        pictures
    scores/                                       the evaluation's CSVs
    submission.zip                                where the targets pack one (task=ytvos)
    runs/<time>/config.yaml                       the resolved config of each run that propagated a video
    config.yaml                                   a copy of the latest of those

Inputs are checked before anything is written: the dataset is found and not empty, the method
(its features, its checkpoint) loads, and the annotations of every video still to do are read and checked.
The data set and the method are both tried before either error is reported: a run with several
wrong inputs names them all.
A run that fails there leaves the folder as it was. A run that propagates at least one video
records its config in a new ``runs/<time>/`` folder first, and each ``.done`` file names that
folder, so every finished sequence keeps a record of the config that made it.

A run that is started again with the same config skips the finished sequences (their done-file
records the config's fingerprint) and redoes a half-written one, or one made with another config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.autograd.profiler import record_function
from tqdm import tqdm

from corrflow.propagation.distributed import Ranks, launch_torchrun, shard_by_frames, under_torchrun
from corrflow.propagation.keyframes import fusion_weights, segments
from corrflow.utils.background import OrderedWriter, prefetch
from corrflow.utils.moved import legacy_targets
from corrflow.utils.threads import set_threads

__all__ = ["fingerprint", "propagate", "propagate_video", "register_resolvers", "resolve_device"]

log = logging.getLogger(__name__)

DONE_SUFFIX = ".done"
RUNS_DIR = "runs"


def register_resolvers() -> None:
    """``corrflow_checkpoint_tag`` for the output folder names in conf/method/*.yaml
    (:func:`corrflow.propagation.methods.checkpoint_tag`), and ``corrflow_suffix_if:<flag>,<suffix>``
    (the suffix when the flag is true, else nothing)."""
    from corrflow.propagation.methods import checkpoint_tag

    if not OmegaConf.has_resolver("corrflow_checkpoint_tag"):
        OmegaConf.register_new_resolver("corrflow_checkpoint_tag", checkpoint_tag)
    if not OmegaConf.has_resolver("corrflow_suffix_if"):
        OmegaConf.register_new_resolver("corrflow_suffix_if", lambda flag, suffix: str(suffix) if bool(flag) else "")


register_resolvers()


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as given.

    Raises:
        ValueError: not a device name, or a CUDA device on a machine without CUDA.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device={name!r} is not a device (auto, cpu, cuda, cuda:1, ...): {e}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} but CUDA is not available here (use device=auto or device=cpu)")
    return device


def fingerprint(cfg: DictConfig) -> str:
    """A short hash of what decides a video's predictions: the data, the checkpoint, and the config
    entries the method names in ``method.fingerprint_keys`` (label propagation: protocol and features)."""
    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("task", *cfg.method.fingerprint_keys)}
    # Class paths as spelled before the package was laid out by domain: finished runs keep their hash.
    parts = legacy_targets(parts)
    ckpt = cfg.get("ckpt")
    if ckpt:
        stat = os.stat(ckpt) if os.path.isfile(ckpt) else None
        parts["ckpt"] = [str(ckpt), stat.st_size if stat else None, stat.st_mtime_ns if stat else None]
    # Scoring, checking and which videos are selected do not change a video's predictions.
    parts["task"].pop("evaluation", None)
    for key in ("split", "sequences", "split_file"):
        parts["task"].get("dataset", {}).pop(key, None)
    parts["task"].get("targets", {}).pop("validate_annotations", None)
    # Options at their defaults leave the hash as it was before they existed (earlier runs resume).
    for holder in (parts["task"], parts["task"].get("targets", {})):
        if holder.get("keyframes") is None:
            holder.pop("keyframes", None)
            holder.pop("fusion", None)
        if not holder.get("late_objects"):
            holder.pop("late_objects", None)
        holder.pop("submission", None)
    # A method that uses no protocol (STM, OSVOS: labels at the frame's pixels, where every way of
    # resizing labels is the identity) does not depend on the protocol's label resizing.
    if "protocol" in (cfg.method.get("unused_groups") or []):
        parts["task"].get("targets", {}).pop("label_resize", None)
    # How a segmenter batches its frames and whether it keeps its weights do not change its predictions.
    method = parts.get("method", {})
    for holder in (method, method.get("segmenter", {})):
        for key in ("batch_frames", "keep_weights", "weights_dir"):
            holder.pop(key, None)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _done_path(results_dir: Path, name: str) -> Path:
    return results_dir / f"{name}{DONE_SUFFIX}"


def _read_done(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _config_text(cfg: DictConfig) -> str:
    """The run's config as YAML, resolved, without the top-level groups its method does not use
    (``method.unused_groups``: STM records no ``features`` or ``protocol``)."""
    unused = set(cfg.method.get("unused_groups") or ()) if "method" in cfg else set()
    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra run (the compose API)
        tree = OmegaConf.to_container(cfg)
    return OmegaConf.to_yaml({k: v for k, v in tree.items() if k not in unused})


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_done(path: Path, record: dict) -> None:
    _write_text_atomic(path, json.dumps(record))


def _record_run(out: Path, cfg: DictConfig, key: str) -> str:
    """Write ``runs/<time>/config.yaml`` (a new folder per run) and its copy ``config.yaml``;
    returns the run's name, ``<time>``."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    runs = out / RUNS_DIR
    runs.mkdir(parents=True, exist_ok=True)
    name, n = stamp, 0
    while True:  # two runs in the same second get their own folders
        try:
            (runs / name).mkdir()
            break
        except FileExistsError:
            n += 1
            name = f"{stamp}_{n}"
    text = f"# propagate run {name}, config fingerprint {key}\n" + _config_text(cfg)
    _write_text_atomic(runs / name / "config.yaml", text)
    _write_text_atomic(out / "config.yaml", text)
    return name


def _image(session, frame: np.ndarray) -> Tensor:
    return session.prepare(torch.from_numpy(frame).permute(2, 0, 1).float().div_(255.0))  # (3, H, W)


def propagate_video(video, *, segmenter, targets, results_dir: Path, recorder, progress: bool, background: int = 2) -> int:
    """Segment one video with the method's per-video ``segmenter`` (a
    :class:`~corrflow.propagation.methods.VideoSegmenter`), writing its predictions; returns the
    number of frames processed (counted once a pass: with keyframes, most frames twice).

    With ``background`` > 0 a reader thread decodes up to that many frames ahead and a writer thread
    turns predictions into PNGs and pictures behind the segmenter, in order
    (:mod:`corrflow.utils.background`); the predictions are the same, only overlapped. 0: all in
    this thread.

    Public for the tools that run one video outside a data set (the demo page); ``video`` is
    anything with the DAVIS video's ``name``, ``len``, ``frame(t)`` and ``frames(start)``.
    """
    session = targets.start(video, stride=segmenter.stride, results_dir=results_dir)
    if hasattr(segmenter, "begin_video"):  # a segmenter that keeps something per video (OSVOS's weights)
        segmenter.begin_video(video.name)

    def write(t: int, frame: np.ndarray, pred: Tensor | None) -> None:
        decoded = session.emit(t, pred)
        if recorder is not None and recorder.wants(t):
            with record_function("propagate.overlay"):
                recorder.add(t, session.draw(frame, decoded))

    with OrderedWriter(max_pending=2 * background) as writer:

        def emit(t: int, frame: np.ndarray, pred: Tensor | None) -> None:
            writer.submit(write, t, frame, pred)

        if getattr(session, "keyframes", None):
            total = _propagate_keyframes(video, session, segmenter, emit, progress=progress)
        else:
            total = _propagate_forward(video, session, segmenter, emit, progress=progress, background=background)
    session.finish()
    return total


def _decoded(video, session) -> Iterator[tuple[int, np.ndarray, Tensor]]:
    """(t, the frame as read, the frame as the features see it) from the start frame on."""
    frames = video.frames(session.start)
    for t in range(session.start, len(video)):
        with record_function("propagate.decode"):
            frame = next(frames, None)
            if frame is None:
                return
            image = _image(session, frame)
        yield t, frame, image


def _propagate_forward(video, session, segmenter, emit, *, progress: bool, background: int) -> int:
    """From the start frame to the end, objects joining where the plan says."""
    entries = session.plan.entries if hasattr(session, "plan") else {}
    total = len(video) - session.start
    frames = prefetch(_decoded(video, session), depth=background)
    if progress:
        frames = tqdm(frames, total=total, desc=video.name, unit="frame", leave=False)
    # a segmenter whose frames do not depend on each other (OSVOS) takes them batch_frames at a time
    batch = int(getattr(segmenter, "batch_frames", 1))
    pending: list[tuple[int, np.ndarray, Tensor]] = []

    def flush() -> None:
        if pending:
            preds = segmenter.step_many(torch.stack([image for _, _, image in pending]))
            for (t, frame, _), pred in zip(pending, preds, strict=True):
                emit(t, frame, pred)
            pending.clear()

    for t, frame, image in frames:
        if t == session.start:
            pred = segmenter.step(image, session.labels)
        elif t in entries:  # objects join here
            flush()
            pred = segmenter.join(image, session.given_labels(t))
        elif batch > 1:
            pending.append((t, frame, image))
            if len(pending) == batch:
                flush()
            continue
        else:
            pred = segmenter.step(image)
        emit(t, frame, pred)
    flush()
    return total


def _run_pass(video, session, segmenter, order: Sequence[int]) -> Iterator[tuple[int, np.ndarray, Tensor]]:
    """One propagation pass over the frames ``order`` (forward or backward): restarted at
    ``order[0]``, a keyframe, with its given labels. Yields ``(t, frame, soft prediction)`` for the others."""
    for n, t in enumerate(order):
        frame = video.frame(t)
        if n == 0:
            segmenter.step(_image(session, frame), session.given_labels(t))
        else:
            yield t, frame, segmenter.step(_image(session, frame))


def _propagate_keyframes(video, session, segmenter, emit, *, progress: bool) -> int:
    """Keyframes (:mod:`corrflow.propagation.keyframes`): each keyframe written as given; the frames
    between two keyframes forward from the earlier and backward from the later (its soft predictions
    kept, on the CPU, for the span), fused; before the first only backward, after the last only forward."""
    keys, mode = session.keyframes, session.fusion
    for k in keys:
        emit(k, video.frame(k), None)
    total = len(keys)
    spans = list(segments(keys, len(video)))
    bar = tqdm(total=sum(len(r) for _, _, r in spans), desc=video.name, unit="frame", leave=False) if progress else None
    for a, b, span in spans:
        backward: dict[int, Tensor] = {}
        if b is not None:
            for t, frame, pred in _run_pass(video, session, segmenter, [b, *reversed(span)]):
                total += 1
                if a is None:
                    emit(t, frame, pred)
                    bar is not None and bar.update()
                else:
                    backward[t] = pred.cpu()
        if a is not None:
            for t, frame, pred in _run_pass(video, session, segmenter, [a, *span]):
                total += 1
                if b is not None:
                    wf, wb = fusion_weights(t, a, b, mode=mode)
                    pred = wf * pred + wb * backward.pop(t).to(pred.device)
                emit(t, frame, pred)
                bar is not None and bar.update()
    if bar is not None:
        bar.close()
    return total


def _score(cfg: DictConfig, targets, dataset, results_dir: Path, scores_dir: Path) -> Any:
    """Run the task's evaluation on the written predictions."""
    evaluator = instantiate(cfg.task.evaluation)
    scores_dir.mkdir(parents=True, exist_ok=True)
    return targets.evaluate(evaluator, results_dir=results_dir, dataset=dataset, output_dir=scores_dir)


def _format_table(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda vals: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths, strict=True)))  # noqa: E731
    return "\n".join([line(keys), line(["-" * w for w in widths]), *(line(c) for c in cells)])


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _describe(segmenter) -> str:
    features = getattr(segmenter, "features", None)
    return f"{type(segmenter).__name__} on {type(features).__name__}" if features is not None else type(segmenter).__name__


def propagate(cfg: DictConfig) -> dict[str, Any] | None:
    """Segment (by the ``method``: label propagation, STM), write, score and draw every video of ``cfg.task``.

    With ``launcher=torchrun`` (and not already a rank) the same command is started again as
    ``nproc_per_node`` ranks (:mod:`corrflow.propagation.distributed`) and this returns None once
    they finish; under torchrun each rank propagates its share of the videos and rank 0 scores.

    Returns:
        ``{"output_dir", "results_dir", "sequences": [per-sequence rows], "scores": {metric: value} | None,
        "skipped": [names resumed from an earlier run], "seconds_per_frame": over the rows' videos
        (each timed when it was segmented, the given first frame included), "submission": the
        archive's path or None}`` (on every rank).
    """
    launcher = str(cfg.get("launcher") or "none")
    if launcher not in ("none", "torchrun"):
        raise ValueError(f"launcher must be 'none' or 'torchrun', got {launcher!r}")
    if launcher == "torchrun" and not under_torchrun():
        status = launch_torchrun(cfg.get("nproc_per_node", "auto"))
        if status:
            from corrflow.utils.cli import UserError

            raise UserError(f"launcher=torchrun: a rank failed (exit status {status}); its error is above. "
                            "Finished videos are kept: the same command resumes")
        return None
    with Ranks(resolve_device(str(cfg.device))) as ranks:
        return _propagate(cfg, ranks)


def _build_inputs(cfg: DictConfig, device: torch.device) -> tuple[Any, Any, Any]:
    """The data set, the targets and the method's per-video segmenter (its features, its
    checkpoint), each built even when another fails, so that a run with several wrong inputs
    (no ``ckpt`` and a wrong ``data.root``) reports them all at once
    (:func:`corrflow.utils.cli.raise_user_errors`). Errors that are not the user's propagate at once."""
    from corrflow.utils.cli import find_user_error, raise_user_errors

    problems: list[BaseException] = []

    def attempt(build):
        try:
            return build()
        except Exception as e:  # noqa: BLE001 - sorted: user errors collected, anything else raised
            if find_user_error(e) is None:
                raise
            problems.append(e)
            return None

    def dataset():
        videos = instantiate(cfg.task.dataset)
        if len(videos) == 0:
            raise ValueError(f"task={cfg.task.name}: no videos under data.root={cfg.data.root}")
        return videos

    videos = attempt(dataset)
    targets = attempt(lambda: instantiate(cfg.task.targets))
    segmenter = None
    if targets is not None:
        segmenter = attempt(lambda: instantiate(cfg.method.segmenter)(device=device, targets=targets))  # a per-video VideoSegmenter
    raise_user_errors(problems)
    return videos, targets, segmenter


def _propagate(cfg: DictConfig, ranks: Ranks) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    results_dir, overlays_dir, scores_dir = out / "results", out / "overlays", out / "scores"
    if cfg.get("seed") is not None:
        torch.manual_seed(int(cfg.seed))
    if device_threads := set_threads(cfg.get("threads", "auto"), ranks=int(os.environ.get("LOCAL_WORLD_SIZE", "1"))):
        log.info("propagate: %d CPU threads", device_threads)

    # Inputs first: nothing is written before the data, the method and the annotations are checked.
    method = str(cfg.method.name)
    device = ranks.device
    if ranks.main:
        log.info("propagate: task=%s method=%s -> %s", cfg.task.name, method, out)
    dataset, targets, segmenter = _build_inputs(cfg, device)
    recorder_factory = instantiate(cfg.overlay) if cfg.get("overlay") else None
    key = fingerprint(cfg)
    progress = bool(cfg.get("progress", True)) and ranks.main
    mine = set(shard_by_frames([len(v) for v in dataset], ranks.world_size)[ranks.rank])
    done_before, error = {}, None
    try:
        for i, video in enumerate(dataset):
            done = _done_path(results_dir, video.name)
            record = _read_done(done) if done.is_file() else None
            if record is not None and record.get("fingerprint") == key:
                done_before[video.name] = record
            elif i in mine:
                plan = targets.check(video)
                if getattr(plan, "entries", None) and not hasattr(segmenter, "join"):
                    raise ValueError(
                        f"{video.name}: objects enter after the first given frame ({video.annotation_path(next(iter(plan.entries)))}), "
                        f"but method={method} cannot take objects once a video has started; use method=label_propagation"
                    )
    except Exception as e:  # noqa: BLE001 - every rank stops, each saying why
        error = e
    ranks.raise_any(error)
    if ranks.main:
        log.info("%d videos (%d finished earlier)%s; %s (labels at stride %d) on %s; config fingerprint %s", len(dataset),
                 len(done_before), f", {ranks.world_size} ranks" if ranks.world_size > 1 else "", _describe(segmenter),
                 segmenter.stride, device, key)  # fmt: skip

    run_name = _record_run(out, cfg, key) if ranks.main and len(done_before) < len(dataset) else None
    run_name = ranks.broadcast(run_name)
    if run_name is not None and ranks.main:
        log.info("config recorded in %s", out / RUNS_DIR / run_name / "config.yaml")
    results_dir.mkdir(parents=True, exist_ok=True)

    rows, skipped = [], []
    share = [v for i, v in enumerate(dataset) if i in mine]
    videos = tqdm(share, desc="videos", unit="video") if progress else share
    for video in videos:
        done = _done_path(results_dir, video.name)
        record = done_before.get(video.name)
        if record is not None:
            log.info("%s: finished in an earlier run, skipped", video.name)
            skipped.append(video.name)
        else:
            if done.is_file():
                log.warning("%s: earlier results were made with another config; redoing", video.name)
            done.unlink(missing_ok=True)
            recorder = recorder_factory(n_frames=len(video)) if recorder_factory else None
            t0 = time.perf_counter()
            n = propagate_video(
                video, segmenter=segmenter, targets=targets, results_dir=results_dir, recorder=recorder, progress=progress,
                background=int(cfg.get("background", 2)),
            )
            seconds = time.perf_counter() - t0
            if recorder is not None:
                stem = overlays_dir / video.name
                recorder.save(stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".gif"))
            record = {"fingerprint": key, "frames": n, "seconds": round(seconds, 3), "run": f"{RUNS_DIR}/{run_name}"}
            _write_done(done, record)  # last: marks the sequence finished
            log.info("%s: %d frames in %.1f s (%.3f s a frame, %.2f frames/s)", video.name, n, seconds, seconds / max(n, 1),
                     n / max(seconds, 1e-9))  # fmt: skip
        frames, secs = int(record["frames"]), float(record["seconds"])
        rows.append({"sequence": video.name, "frames": frames, "seconds": secs, "fps": frames / max(secs, 1e-9),
                     "s/frame": secs / max(frames, 1)})  # fmt: skip

    # Every rank has finished its share: rank 0 packs, scores and reports, once.
    gathered = ranks.gather((rows, skipped))
    order = {name: i for i, name in enumerate(dataset.names)}
    rows = sorted((r for g in gathered for r in g[0]), key=lambda r: order[r["sequence"]])
    skipped = sorted((s for g in gathered for s in g[1]), key=order.get)
    result = None
    if ranks.main:
        result = _report(cfg, targets, dataset, rows, skipped, out, results_dir, scores_dir, method)
    return ranks.broadcast(result)


def _report(cfg, targets, dataset, rows, skipped, out: Path, results_dir: Path, scores_dir: Path, method: str) -> dict[str, Any]:
    """Pack (a submission archive, where the targets make one), score, print the table."""
    finalize = getattr(targets, "finalize", None)
    submission = finalize(results_dir=results_dir, dataset=dataset, output_dir=out) if finalize else None
    if submission is not None:
        log.info("submission archive: %s", submission)
    scores = _score(cfg, targets, dataset, results_dir, scores_dir) if cfg.get("score", True) else None
    per_seq = targets.per_sequence(scores) if scores is not None else {}
    for row in rows:
        row.update(per_seq.get(row["sequence"], {}))
    summary = scores.as_dict() if scores is not None and hasattr(scores, "as_dict") else None
    table = _format_table(rows)
    if summary:
        table += "\n" + "  ".join(f"{k} {v:.3f}" for k, v in summary.items() if isinstance(v, (int, float)))
    total_frames, total_seconds = sum(r["frames"] for r in rows), sum(r["seconds"] for r in rows)
    seconds_per_frame = total_seconds / max(total_frames, 1)
    table += f"\nmethod={method}: {total_frames} frames in {total_seconds:.1f} s, {seconds_per_frame:.3f} s a frame"
    if submission is not None:
        table += f"\nsubmission: {submission}"
    print(table)
    return {
        "output_dir": str(out),
        "results_dir": str(results_dir),
        "sequences": rows,
        "scores": {k: float(v) for k, v in summary.items() if isinstance(v, (int, float, np.floating))} if summary else None,
        "skipped": skipped,
        "seconds_per_frame": seconds_per_frame,
        "submission": str(submission) if submission is not None else None,
    }
