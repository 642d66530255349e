"""What is propagated, and how predictions are written and scored: object masks or keypoints.

A task config names one of these (``task.targets._target_``); the propagation loop is the same
for both. ``harden`` says what the arg-max feed-back of the CorrFlow protocol means for them.
:meth:`check` reads and checks a video's annotations; the propagation run calls it for every video
before it writes anything, so that bad input fails early and leaves earlier results alone. Per
video, :meth:`start` gives a session holding the query frame's labels on the
feature grid; ``session.emit(t, pred)`` decodes and writes frame ``t``; ``session.finish()``
completes the files. Predictions are written first and scored afterwards, by the task's
evaluation function.

Output layout, under ``results_dir``:

* masks: ``<seq>/%05d.png`` palette PNGs (frame index), the size of the frames (DAVIS layout);
  videos that name their frames (YouTube-VOS) get ``<seq>/<frame name>.png``, only for the frames
  they ask for (``output_frames``);
* keypoints: ``<seq>.npz`` with ``keypoints`` (T, K, 2) float32 x, y pixels, NaN where nothing
  was propagated (frames before the query, joints invisible in it) and ``found`` (T, K) bool.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.profiler import record_function

from corrflow.data.vos.davis import object_ids
from corrflow.models.corrflow import resize_index_map
from corrflow.propagation.functional import onehot_argmax
from corrflow.propagation.keyframes import FUSIONS, resolve_keyframes
from corrflow.propagation.labels import (
    HEATMAP_STYLES,
    harden_heatmaps,
    heatmaps_to_keypoints,
    keypoints_to_heatmaps,
    labels_to_ids,
    masks_to_onehot,
    pool_labels,
    resize_labels,
    upsample_labels,
)
from corrflow.utils.grid import feature_grid, pad_to_stride
from corrflow.utils.io import write_indexed_png
from corrflow.utils.overlay import blend_mask, draw_keypoints

__all__ = ["KeypointTargets", "MaskPlan", "MaskTargets", "mask_to_grid", "rescale_points"]


def rescale_points(xy: np.ndarray, src: Sequence[int], dst: Sequence[int], *, centred: bool = True) -> np.ndarray:
    """(..., 2) x, y pixels of an (H, W) = ``src`` frame -> the same points in the frame resized to
    ``dst``. ``centred``: the pixel-centre convention of bilinear resizing (``align_corners=False``),
    x' = (x + 0.5) * W' / W - 0.5; else plain scaling x' = x * W' / W (CRW's). NaNs stay NaN."""
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    c = 0.5 if centred else 0.0
    out = np.array(xy, dtype=np.float32, copy=True)
    out[..., 0] = (out[..., 0] + c) * sx - c
    out[..., 1] = (out[..., 1] + c) * sy - c
    return out


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


@dataclass(frozen=True)
class MaskPlan:
    """Where a video's masks are given and how it is propagated.

    ``start``: the first given frame (nothing before it is predicted unless keyframes say so).
    ``ids``: every object id, in channel order 1..N (the order in which they enter).
    ``given``: ``{t: (mask (H, W) uint8, ids given at t, complete)}``; ``complete``: the mask is
    the frame's whole truth (written as given), else only ``ids``' pixels are (objects joining).
    ``keyframes``: sorted keyframe indices, or None (one forward pass from ``start``).
    """

    start: int
    ids: tuple[int, ...]
    given: dict
    keyframes: tuple[int, ...] | None = None

    @property
    def entries(self) -> dict[int, tuple[int, ...]]:
        """``{t: ids}`` of the objects joining after ``start`` (forward passes only)."""
        return {} if self.keyframes else {t: g[1] for t, g in self.given.items() if t != self.start}


def mask_to_grid(mask: Tensor, ids: Sequence[int], *, stride: int, label_resize: str) -> Tensor:
    """(H, W) integer ids -> (1 + N, h, w) labels on the feature grid (see :class:`MaskTargets`'s ``label_resize``)."""
    onehot = masks_to_onehot(mask, ids)
    if label_resize == "bilinear":
        return resize_labels(onehot, feature_grid(tuple(mask.shape), stride))
    if label_resize == "code":
        index = pad_to_stride(onehot.argmax(dim=0), stride)  # (h*s, w*s) label indices
        return resize_index_map(index[None], feature_grid(tuple(mask.shape), stride), onehot.shape[0])[0]
    return pool_labels(onehot, stride)


class MaskTargets:
    """Object masks: labels are background + the objects' ids, one-hot.

    By default the first frame's mask gives every object (DAVIS). Two more ways are options:

    * late objects: an object joins at the first frame whose annotation holds it (its first mask),
      and is propagated from there on, the objects already tracked going on undisturbed
      (:meth:`corrflow.propagation.propagator.LabelPropagator.join`). YouTube-VOS videos say where
      each object enters (their ``entries``); on DAVIS it is ``late_objects=True`` (off by default:
      DAVIS's own protocol gives only the first frame).
    * keyframes (:mod:`corrflow.propagation.keyframes`): every keyframe's mask is a reference,
      the frames between two keyframes are propagated forward from the earlier and backward from
      the later, and the two are fused (``fusion``). All keyframes must give the same objects.
      The given keyframes are left out of the score.

    Args:
        validate_annotations: :meth:`check` reads all of a video's annotations (palette or
            grayscale, size, no ids that the given frames lack), not only the given ones, so that
            bad ground truth fails before propagating and names its file. Propagation itself reads
            only the given frames'.
        label_resize: how masks reach the feature grid and predictions come back.
            'pool': each cell holds the share of each label among its stride x stride pixels (of
            the edge-padded frame); predictions are resized bilinearly to the padded frame, then
            cropped. 'bilinear': CRW's test code, a plain bilinear resize of the one-hot mask
            straight to the grid, and of the predictions straight back to the frame size.
            'code': CorrFlow's released test code, a bilinear resize of the map of label indices
            (0 background, 1..N the objects) truncated to integers, one-hot; the arg-max feed-back
            is taken at input resolution and brought back the same way. It erodes objects by
            their boundary cells and, between objects, can invent the index lying between theirs;
            it is there to reproduce that code. Predictions come back as with 'pool'.
        late_objects: objects first seen in a later annotation join there (see above).
        keyframes: None, a list of frame indices, 'all_given', 'every_N' or 'count_N'
            (:func:`corrflow.propagation.keyframes.resolve_keyframes`).
        fusion: how forward and backward predictions are weighted between keyframes, 'linear' or
            'nearest' (:func:`corrflow.propagation.keyframes.fusion_weights`).
        submission: a file name: after the run, the predictions are packed into
            ``<output_dir>/<submission>`` as ``Annotations/<video>/<frame>.png`` (the YouTube-VOS
            upload); None: no archive.
    """

    LABEL_RESIZE = ("pool", "bilinear", "code")

    def __init__(
        self,
        *,
        validate_annotations: bool = True,
        label_resize: str = "pool",
        late_objects: bool = False,
        keyframes: Any = None,
        fusion: str = "linear",
        submission: str | None = None,
    ) -> None:
        if label_resize not in self.LABEL_RESIZE:
            raise ValueError(f"label_resize must be one of {self.LABEL_RESIZE}, got {label_resize!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"keyframe fusion must be one of {FUSIONS}, got {fusion!r}")
        if keyframes is not None and late_objects:
            raise ValueError("keyframes and late objects do not mix: every keyframe gives every object (set one of them)")
        if keyframes is not None and not isinstance(keyframes, str):
            keyframes = [int(k) for k in keyframes]
        self.validate_annotations = validate_annotations
        self.label_resize = label_resize
        self.late_objects, self.keyframes, self.fusion = bool(late_objects), keyframes, fusion
        self.submission = submission
        self._stride = 1  # of the video in hand (set by start); 'code' feed-back needs it

    def harden(self, labels: Tensor) -> Tensor:
        """Arg-max feed-back for masks, (1, D, h, w): the one-hot of the arg-max over channels; with
        ``label_resize='code'``, the arg-max at input resolution resized back as that code does."""
        if self.label_resize != "code":
            return onehot_argmax(labels)
        h, w = labels.shape[-2:]
        s = self._stride
        up = upsample_labels(labels[0].float(), (h * s, w * s), s)  # the padded input resolution
        return resize_index_map(up.argmax(dim=0)[None], (h, w), labels.shape[1]).to(labels.dtype)

    @staticmethod
    def output_path(results_dir: Path, name: str) -> Path:
        return results_dir / name

    def plan(self, video) -> MaskPlan:
        """Read the given masks of a video and say how it is propagated.

        Raises:
            FileNotFoundError / ValueError naming the file and the frame: a missing annotation, a
            keyframe past the video's end, keyframes with different objects, no object given.
        """
        if self.keyframes is not None:
            if getattr(video, "entries", None) is not None:
                raise ValueError(
                    f"{video.name}: keyframes need every object in each keyframe's mask, but this data set gives "
                    "objects where they enter (YouTube-VOS); drop task.keyframes"
                )
            folder = video.frame_paths[0].parent
            given = video.given_frames if self.keyframes == "all_given" else ()
            if self.keyframes == "all_given" and not given:
                raise FileNotFoundError(f"{video.annotation_dir}: the annotation folder holds no mask of the frames in {folder}")
            keys = resolve_keyframes(self.keyframes, len(video), given=given, where=str(folder))
            masks, first = {}, None
            for k in keys:
                mask = video.mask(k)
                ids = tuple(object_ids(mask))
                if first is None:
                    if not ids:
                        raise ValueError(f"{video.annotation_path(k)}: keyframe {k} holds no object")
                    first = (k, ids)
                elif ids != first[1]:
                    raise ValueError(
                        f"{video.annotation_path(k)}: keyframe {k} holds objects {list(ids)}, but keyframe {first[0]} "
                        f"({video.annotation_path(first[0])}) holds {list(first[1])}; every keyframe must give the same objects"
                    )
                masks[k] = (mask, ids, True)
            return MaskPlan(keys[0], first[1], masks, tuple(keys))
        entries = getattr(video, "entries", None)
        if entries is None and self.late_objects:
            entries, seen = {}, set()
            for t in video.given_frames:
                new = [i for i in object_ids(video.mask(t)) if i not in seen]
                if new:
                    entries[t] = new
                    seen.update(new)
            if not entries:
                raise ValueError(f"{video.annotation_dir}: no annotation holds an object")
        if entries is None:
            mask = video.first_mask()
            return MaskPlan(0, tuple(object_ids(mask)), {0: (mask, tuple(object_ids(mask)), True)})
        given = {t: (video.mask(t), tuple(ids), False) for t, ids in entries.items()}
        return MaskPlan(next(iter(given)), tuple(i for g in given.values() for i in g[1]), given)

    def check(self, video) -> MaskPlan:
        """Read the given masks (and, with ``validate_annotations``, all of them); returns the plan.

        Raises:
            FileNotFoundError / ValueError naming the bad file.
        """
        plan = self.plan(video)
        if self.validate_annotations:
            video.validate_annotations(plan.ids)
        return plan

    def start(self, video, *, stride: int, results_dir: Path) -> MaskSession:
        """The video's session; call :meth:`check` first (the propagation run does, for every video)."""
        self._stride = stride
        plan = self.plan(video)
        out = self.output_path(results_dir, video.name)
        _remove(out)  # a half-written run of this video is redone from scratch
        out.mkdir(parents=True)
        names = getattr(video, "frame_names", None)
        write = getattr(video, "output_frames", None)
        return MaskSession(
            torch.from_numpy(plan.given[plan.start][0].astype(np.int64)), list(plan.ids), stride=stride, out_dir=out,
            label_resize=self.label_resize, plan=plan, names=names, write=write, fusion=self.fusion,
        )  # fmt: skip

    def finalize(self, *, results_dir: Path, dataset, output_dir: Path) -> Path | None:
        """After every video: pack the predictions into the ``submission`` archive (if set)."""
        if not self.submission:
            return None
        path = output_dir / self.submission
        tmp = path.with_name(f".{path.name}.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for name in dataset.names:
                for png in sorted((results_dir / name).glob("*.png")):
                    z.write(png, f"Annotations/{name}/{png.name}")
        os.replace(tmp, path)
        return path

    def evaluate(self, evaluator: Callable[..., Any], *, results_dir: Path, dataset, output_dir: Path) -> Any:
        """Score with ``evaluator(results_dir, sequences=..., output_dir=...)`` (e.g. ``evaluate_davis``);
        with keyframes, the given keyframes are named in ``exclude_frames`` and not scored."""
        kwargs = {}
        if self.keyframes is not None:
            kwargs["exclude_frames"] = {v.name: list(self.plan(v).keyframes) for v in dataset}
        if self.late_objects:
            kwargs["late_objects"] = True
        return evaluator(results_dir, sequences=list(dataset.names), output_dir=output_dir, **kwargs)

    @staticmethod
    def per_sequence(scores: Any) -> dict[str, dict[str, float]]:
        """``{seq: {"J": .., "F": .., "J&F": ..}}`` (means over the sequence's objects) from DAVIS scores."""
        acc: dict[str, list[tuple[float, float]]] = {}
        for o in getattr(scores, "per_object", ()):
            acc.setdefault(o.sequence, []).append((o.j_mean, o.f_mean))
        out = {}
        for seq, jf in acc.items():
            j, f = float(np.mean([a for a, _ in jf])), float(np.mean([b for _, b in jf]))
            out[seq] = {"J&F": (j + f) / 2, "J": j, "F": f}
        return out


class MaskSession:
    """One video's masks: the given labels on the feature grid, and the writer of palette PNGs.

    Args:
        mask: (H, W) ids of the first given frame; ``ids``: every object id, in channel order.
        plan: the video's :class:`MaskPlan` (default: ``mask`` given at frame 0, complete).
        names: the frames' names (files ``<name>.png``); default ``%05d`` of the frame index.
        write: indices of the frames to write (YouTube-VOS: those ``meta.json`` asks for); default all.
        fusion: keyframe fusion ('linear' or 'nearest').
    """

    def __init__(
        self, mask: Tensor, ids: list[int], *, stride: int, out_dir: Path, label_resize: str = "pool",
        plan: MaskPlan | None = None, names: Sequence[str] | None = None, write: Sequence[int] | None = None,
        fusion: str = "linear",
    ) -> None:  # fmt: skip
        self.plan = plan or MaskPlan(0, tuple(ids), {0: (mask.numpy(), tuple(ids), True)})
        self.start = self.plan.start
        self.keyframes, self.fusion = self.plan.keyframes, fusion
        self.size = tuple(mask.shape)
        self.ids, self.stride, self.out_dir = ids, stride, out_dir
        self.label_resize = label_resize
        self.names, self.write = names, None if write is None else set(write)
        self.labels = self.given_labels(self.start)

    def given_labels(self, t: int) -> Tensor:
        """The labels given at frame ``t`` on the feature grid: (1 + N, h, w) for a complete mask
        (the start, a keyframe; N the objects so far), else (K, h, w) the shares of the K objects joining."""
        mask, ids, complete = self.plan.given[t]
        labels = mask_to_grid(torch.from_numpy(np.asarray(mask).astype(np.int64)), ids, stride=self.stride, label_resize=self.label_resize)
        return labels if complete or t == self.start else labels[1:]  # joining objects: no background channel

    @staticmethod
    def prepare(image: Tensor) -> Tensor:
        """The frame as the features see it: (3, H, W), unchanged for masks."""
        return image

    def emit(self, t: int, pred: Tensor) -> np.ndarray:
        """Decode (D, h, w) labels of frame t to an (H, W) id map and write it. A frame given whole
        (the start, a keyframe) is written as given; where objects join, their given pixels win."""
        given = self.plan.given.get(t)
        if given is not None and given[2]:
            ids = torch.from_numpy(np.asarray(given[0]).astype(np.int64))
        else:
            with record_function("propagate.labels_to_ids"):
                pred = pred.float().cpu()
                if self.label_resize == "bilinear":
                    full = resize_labels(pred, self.size)
                else:
                    full = upsample_labels(pred, self.size, self.stride)
                ids = labels_to_ids(full, self.ids)
            if given is not None:
                mask = torch.from_numpy(np.asarray(given[0]).astype(np.int64))
                joined = torch.zeros_like(mask, dtype=torch.bool)
                for i in given[1]:
                    joined |= mask == i
                ids = torch.where(joined, mask, ids)
        ids = ids.numpy().astype(np.uint8)
        if self.write is None or t in self.write:
            name = self.names[t] if self.names is not None else f"{t:05d}"
            with record_function("propagate.png"):
                write_indexed_png(self.out_dir / f"{name}.png", ids)
        return ids

    @staticmethod
    def draw(frame: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        return blend_mask(frame, decoded)

    def finish(self) -> None:
        """Nothing left to write: each frame's PNG was written by :meth:`emit`."""


class KeypointTargets:
    """Keypoints: labels are Gaussian heat maps (``sigma`` feature cells) plus a background channel.

    Args:
        sigma: heat-map width in feature cells (CRW: 0.5).
        decode_topk: how many of the highest cells give a keypoint's position (CRW: 3).
        frame_size: (H, W) the frames are resized to (bilinearly) before the features see them,
            or None for their own size. CRW's JHMDB loader resizes every frame to 320 x 320. The
            keypoints are mapped into the resized frame and the predictions back to the frame's own
            pixels, so results and scores stay in the annotations' pixels.
        heatmap_style: 'centred' (a Gaussian at the keypoint's sub-cell position, pixel-centre
            convention throughout) or 'crw' (CRW's JHMDB maps and coordinate conventions: a
            whole-cell Gaussian stamp, plain scaling between frame sizes, cell c at pixel c x
            stride; see :func:`corrflow.propagation.labels.keypoints_to_heatmaps`).
    """

    def __init__(
        self,
        *,
        sigma: float = 0.5,
        decode_topk: int = 3,
        frame_size: Sequence[int] | None = None,
        heatmap_style: str = "centred",
    ) -> None:
        if sigma <= 0 or decode_topk < 1:
            raise ValueError(f"sigma must be > 0 and decode_topk >= 1, got {sigma}, {decode_topk}")
        if heatmap_style not in HEATMAP_STYLES:
            raise ValueError(f"heatmap_style must be one of {HEATMAP_STYLES}, got {heatmap_style!r}")
        self.heatmap_style = heatmap_style
        if frame_size is not None and (len(frame_size) != 2 or min(int(v) for v in frame_size) < 1):
            raise ValueError(f"frame_size must be (H, W) with positive sides or None, got {frame_size}")
        self.sigma, self.decode_topk = sigma, decode_topk
        self.frame_size = None if frame_size is None else (int(frame_size[0]), int(frame_size[1]))

    @staticmethod
    def harden(labels: Tensor) -> Tensor:
        """Arg-max feed-back for keypoints: each map one-hot at its highest cell, (1, 1 + K, h, w)."""
        return harden_heatmaps(labels)

    @staticmethod
    def output_path(results_dir: Path, name: str) -> Path:
        return results_dir / f"{name}.npz"

    @staticmethod
    def check(video) -> None:
        """Read the query frame's keypoints and the first frame's size (errors name the file)."""
        video.query()
        _ = video.size

    def start(self, video, *, stride: int, results_dir: Path) -> KeypointSession:
        coords, visible = video.query()
        size = tuple(int(v) for v in video.size)
        in_size = self.frame_size or size
        grid = feature_grid(in_size, stride)
        centred = self.heatmap_style == "centred"
        xy = rescale_points(coords, size, in_size, centred=centred)
        labels = keypoints_to_heatmaps(
            torch.from_numpy(np.nan_to_num(xy) if centred else xy), torch.from_numpy(visible),
            grid=grid, stride=stride, sigma=self.sigma, style=self.heatmap_style,
        )  # fmt: skip
        path = self.output_path(results_dir, video.name)
        _remove(path)
        return KeypointSession(
            labels, coords, visible, n_frames=len(video), start=video.query_index, stride=stride, topk=self.decode_topk,
            path=path, size=size, in_size=in_size, style=self.heatmap_style,
        )  # fmt: skip

    def evaluate(self, evaluator: Callable[..., Any], *, results_dir: Path, dataset, output_dir: Path) -> Any:
        """Score with ``evaluator(results_dir, annotations, output_dir=...)`` (e.g. ``evaluate_keypoints``)."""
        return evaluator(results_dir, dataset.annotations(), output_dir=output_dir)

    @staticmethod
    def per_sequence(scores: Any) -> dict[str, dict[str, float]]:
        """``{seq: {"PCK@0.1": .., ...}}`` from keypoint scores."""
        return {s: {f"PCK@{t:g}": float(v) for t, v in d.items()} for s, d in getattr(scores, "per_sequence", {}).items()}


class KeypointSession:
    """One video's keypoints: the query heat maps, and the (T, K, 2) array written at the end."""

    def __init__(
        self, labels, coords, visible, *, n_frames: int, start: int, stride: int, topk: int, path: Path,
        size: tuple[int, int] | None = None, in_size: tuple[int, int] | None = None, style: str = "centred",
    ) -> None:  # fmt: skip
        self.labels, self.start, self.stride, self.topk, self.path = labels, start, stride, topk, path
        self.size, self.in_size, self.style = size, in_size or size, style
        k = coords.shape[0]
        self._query = np.where(visible[:, None], coords, np.nan).astype(np.float32)
        self.keypoints = np.full((n_frames, k, 2), np.nan, dtype=np.float32)  # (T, K, 2): 8 bytes a keypoint
        self.found = np.zeros((n_frames, k), dtype=bool)

    def emit(self, t: int, pred: Tensor) -> np.ndarray:
        """Decode (1 + K, h, w) heat maps of frame t to (K, 2) pixels (the query frame: its input)."""
        if t == self.start:
            xy = self._query
        else:
            coords, _ = heatmaps_to_keypoints(pred[1:].float().cpu(), stride=self.stride, topk=self.topk, style=self.style)
            xy = coords.numpy()
            if self.in_size != self.size:
                xy = rescale_points(xy, self.in_size, self.size, centred=self.style == "centred")
        self.keypoints[t] = xy
        self.found[t] = np.isfinite(xy).all(axis=1)
        return xy

    def prepare(self, image: Tensor) -> Tensor:
        """(3, H, W) -> the frame as the features see it: resized to ``in_size`` when it differs."""
        if self.in_size is None or tuple(image.shape[-2:]) == tuple(self.in_size):
            return image
        return F.interpolate(image[None], size=self.in_size, mode="bilinear", align_corners=False)[0]

    @staticmethod
    def draw(frame: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        return draw_keypoints(frame, decoded)

    def finish(self) -> None:
        """Write ``keypoints`` and ``found`` to the ``.npz`` (atomically)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp.npz")
        np.savez(tmp, keypoints=self.keypoints, found=self.found)
        os.replace(tmp, self.path)
