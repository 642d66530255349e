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
* keypoints: ``<seq>.npz`` with ``keypoints`` (T, K, 2) float32 x, y pixels, NaN where nothing
  was propagated (frames before the query, joints invisible in it) and ``found`` (T, K) bool.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from corrflow.data.davis import object_ids
from corrflow.models.corrflow import resize_index_map
from corrflow.propagation.functional import onehot_argmax
from corrflow.propagation.labels import (
    HEATMAP_STYLES,
    feature_grid,
    harden_heatmaps,
    heatmaps_to_keypoints,
    keypoints_to_heatmaps,
    labels_to_ids,
    masks_to_onehot,
    pad_to_stride,
    pool_labels,
    resize_labels,
    upsample_labels,
)
from corrflow.utils.io import write_indexed_png
from corrflow.utils.overlay import blend_mask, draw_keypoints

__all__ = ["KeypointTargets", "MaskTargets", "rescale_points"]


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


class MaskTargets:
    """Object masks: labels are background + the first frame's object ids, one-hot.

    Args:
        validate_annotations: :meth:`check` reads all of a video's annotations (palette or
            grayscale, size, no ids that the first frame lacks), not only the first frame's, so that
            bad ground truth fails before propagating and names its file. Propagation itself reads
            only the first frame's.
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
    """

    LABEL_RESIZE = ("pool", "bilinear", "code")

    def __init__(self, *, validate_annotations: bool = True, label_resize: str = "pool") -> None:
        if label_resize not in self.LABEL_RESIZE:
            raise ValueError(f"label_resize must be one of {self.LABEL_RESIZE}, got {label_resize!r}")
        self.validate_annotations = validate_annotations
        self.label_resize = label_resize
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

    def check(self, video) -> None:
        """Read the first frame's mask (and, with ``validate_annotations``, all of them).

        Raises:
            FileNotFoundError / ValueError naming the bad file.
        """
        ids = object_ids(video.first_mask())
        if self.validate_annotations:
            video.validate_annotations(ids)

    def start(self, video, *, stride: int, results_dir: Path) -> MaskSession:
        """The video's session; call :meth:`check` first (the propagation run does, for every video)."""
        self._stride = stride
        mask = video.first_mask()
        ids = object_ids(mask)
        out = self.output_path(results_dir, video.name)
        _remove(out)  # a half-written run of this video is redone from scratch
        out.mkdir(parents=True)
        return MaskSession(
            torch.from_numpy(mask.astype(np.int64)), ids, stride=stride, out_dir=out, label_resize=self.label_resize
        )

    def evaluate(self, evaluator: Callable[..., Any], *, results_dir: Path, dataset, output_dir: Path) -> Any:
        """Score with ``evaluator(results_dir, sequences=..., output_dir=...)`` (e.g. ``evaluate_davis``)."""
        return evaluator(results_dir, sequences=list(dataset.names), output_dir=output_dir)

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
    """One video's masks: the query labels, and the writer of ``%05d.png`` palette PNGs."""

    def __init__(self, mask: Tensor, ids: list[int], *, stride: int, out_dir: Path, label_resize: str = "pool") -> None:
        self.start = 0
        self.size = tuple(mask.shape)
        self.ids, self.stride, self.out_dir = ids, stride, out_dir
        self.label_resize = label_resize
        self._mask = mask
        onehot = masks_to_onehot(mask, ids)
        if label_resize == "bilinear":
            self.labels = resize_labels(onehot, feature_grid(self.size, stride))  # (1 + N, h, w)
        elif label_resize == "code":
            index = pad_to_stride(onehot.argmax(dim=0), stride)  # (h*s, w*s) label indices
            self.labels = resize_index_map(index[None], feature_grid(self.size, stride), onehot.shape[0])[0]
        else:
            self.labels = pool_labels(onehot, stride)

    @staticmethod
    def prepare(image: Tensor) -> Tensor:
        """The frame as the features see it: (3, H, W), unchanged for masks."""
        return image

    def emit(self, t: int, pred: Tensor) -> np.ndarray:
        """Decode (D, h, w) labels of frame t to an (H, W) id map and write it; the query frame's is the input mask."""
        if t == self.start:
            ids = self._mask
        else:
            pred = pred.float().cpu()
            if self.label_resize == "bilinear":
                full = resize_labels(pred, self.size)
            else:
                full = upsample_labels(pred, self.size, self.stride)
            ids = labels_to_ids(full, self.ids)
        ids = ids.numpy().astype(np.uint8)
        write_indexed_png(self.out_dir / f"{t:05d}.png", ids)
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
