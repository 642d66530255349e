"""What ``tools/propagate.py`` runs on each video: the ``method`` config group's builders.

A method's config (``conf/method/<name>.yaml``) holds ``segmenter``, a partial ``_target_`` that
:func:`corrflow.propagation.run.propagate` calls as ``segmenter(device=..., targets=...)`` once per
run, after the dataset and targets are built and before anything is written. It returns a
:class:`VideoSegmenter`: per-video state fed one frame at a time, the same for every method, so
the run's reading, writing, scoring, overlays and resume serve them all.

- :func:`label_propagation` (the default): the first frame's labels carried by feature
  affinities; the ``features`` and ``protocol`` groups say how (a :class:`LabelPropagator`).
- :func:`stm`: an STM segmenter trained with ``tools/finetune.py`` (:class:`STMVideoSegmenter`).
- :func:`osvos`: an OSVOS parent network trained with ``tools/finetune.py``, fine-tuned per video
  on its first frame, frames then segmented independently
  (:class:`~corrflow.propagation.osvos.OSVOSVideoSegmenter`).

A new method is one more builder here and one more ``conf/method/*.yaml``; the run does not change.

Its config also names ``fingerprint_keys`` (the top-level config entries that, with ``task`` and
``ckpt``, decide its predictions, so that a re-run skips what it finished) and ``output_name``
(the results folder under ``${paths.log_dir}/propagate/``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from corrflow.propagation.propagator import LabelPropagator
from corrflow.propagation.targets import MaskTargets
from corrflow.propagation.working_size import WorkingSize

__all__ = ["STMVideoSegmenter", "VideoSegmenter", "checkpoint_tag", "label_propagation", "osvos", "stm"]

log = logging.getLogger(__name__)


class VideoSegmenter(Protocol):
    """One video at a time, frame by frame, in memory bounded whatever the video's length.

    ``stride``: the grid its labels live on, in pixels (1: the frame's own pixels); the task's
    targets hand the first frame's labels on that grid and decode the predictions from it.
    ``step(frame, labels)``: ``frame`` (3, H, W) RGB in [0, 1]; ``labels`` (D, h, w) for the first
    frame of a video (which starts it afresh), None for the frames to predict. Returns (D, h, w).

    Optional ``join(frame, new)``: objects that enter later (``new`` (K, h, w) their shares of
    each cell) join a started video and the (D + K, h, w) labels of that frame come back
    (:meth:`LabelPropagator.join`). A segmenter without it is refused for videos with late objects.

    Optional ``batch_frames`` and ``step_many(frames)``: a segmenter whose frames do not depend on
    each other (OSVOS) is handed the frames after the first in (B, 3, H, W) batches of up to
    ``batch_frames`` and returns (B, D, h, w), what ``step`` would give for each.
    """

    stride: int

    def step(self, frame: Tensor, labels: Tensor | None = None) -> Tensor: ...


def label_propagation(
    *,
    features: nn.Module,
    propagator: Callable[..., LabelPropagator],
    device: torch.device,
    targets: Any,
) -> LabelPropagator:
    """Label propagation with ``features`` (built from ``features.extractor``) under the protocol's
    partial ``propagator``; ``targets.harden`` is what its arg-max feed-back means."""
    return propagator(features.to(device).eval(), device=device, harden=targets.harden)


class STMVideoSegmenter:
    """:class:`~corrflow.models.segmenters.STMInference` behind the :class:`VideoSegmenter` steps.

    Labels are at the frame's pixels (``stride`` 1): the first frame's (1 + N, H, W) one-hot
    (background, then the N objects in the targets' order) and, for the other frames, the (1 + N,
    H, W) probabilities of the objects' soft aggregation. A first frame without objects gives
    background for the whole video (with a warning), as label propagation does.

    Args:
        net: the STM segmenter (:func:`~corrflow.models.segmenters.load_segmenter`).
        memory_every, max_memory_frames: the memory (``STMInference``'s ``every`` and ``max_frames``):
            the first frame, every ``memory_every``-th frame and the previous frame, at most
            ``max_memory_frames`` in all.
        device: where the network, the frames and the memory live.
        short_side: None segments at the frame's own size; an int resizes each frame (aspect kept)
            so that its shorter side has that many pixels, and the first frame's masks with it
            (area-averaged, so a small object stays), and resizes the probabilities back to the
            frame's size (bilinearly: they still sum to one). Time and memory a frame fall with
            the square of the scale; the scores are still taken at the frame's own size.
    """

    stride = 1

    def __init__(
        self,
        net: nn.Module,
        *,
        memory_every: int = 5,
        max_memory_frames: int = 20,
        device: torch.device | str = "cpu",
        short_side: int | None = None,
    ) -> None:
        from corrflow.models.segmenters.stm import STMInference

        self.device = torch.device(device)
        self.resize = WorkingSize(short_side)
        self.inference = STMInference(net.to(self.device).eval(), every=memory_every, max_frames=max_memory_frames, device=self.device)
        self._empty: tuple[int, ...] | None = None  # (D, H, W) of a video without objects

    @property
    def memory_frames(self) -> list[int]:
        """Indices of the frames the next step reads."""
        return [] if self._empty is not None else self.inference.memory_frames

    @torch.no_grad()
    def step(self, frame: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is not None:
            if labels.ndim != 3 or labels.shape[-2:] != frame.shape[-2:]:
                raise ValueError(f"labels must be (1 + N, {frame.shape[-2]}, {frame.shape[-1]}) at the frame's pixels, got {tuple(labels.shape)}")
            self.inference.reset()
            if labels.shape[0] == 1:
                log.warning("the first frame has no object: the video's predictions are background")
                self._empty = tuple(labels.shape)
                return labels.to(self.device, torch.float32)
            self._empty = None
            objects = self.resize.masks(labels[1:].to(self.device, torch.float32))
            probs = self.inference.start(self.resize.frame(frame.to(self.device)), objects)
            # the first frame's own labels, exactly, at its size (the resized ones are what STM memorised)
            return labels.to(self.device, torch.float32) if self.resize.short_side is not None else probs
        if self._empty is not None:
            out = torch.zeros(self._empty, device=self.device)
            out[0] = 1.0
            return out
        hw = (frame.shape[-2], frame.shape[-1])
        return self.resize.back(self.inference.step(self.resize.frame(frame.to(self.device))), hw)


def require_masks(targets: Any, method: str) -> None:
    """A segmenter method's check that the task's targets are object masks (not keypoints)."""
    if not isinstance(targets, MaskTargets):
        raise ValueError(
            f"method={method} segments object masks, but this task's targets are {type(targets).__name__}: "
            "use method=label_propagation (the default) for it"
        )


def stm(
    *,
    ckpt: str | os.PathLike | None,
    memory_every: int = 5,
    max_memory_frames: int = 20,
    short_side: int | None = None,
    device: torch.device,
    targets: Any,
) -> STMVideoSegmenter:
    """STM from a ``tools/finetune.py`` checkpoint (``ckpt=``), for object masks.

    Raises:
        ValueError: no ``ckpt``, a pretraining checkpoint or another kind of file (saying what to
        pass instead), or targets that are not object masks (keypoint tasks).
        FileNotFoundError: no file at ``ckpt``.
    """
    from corrflow.models.backbone import checkpoint_kind
    from corrflow.models.segmenters import load_segmenter

    require_masks(targets, "stm")
    if not ckpt:
        raise ValueError("method=stm needs an STM checkpoint: ckpt=<a tools/finetune.py checkpoint, e.g. <run>/checkpoints/final.ckpt>")
    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt={path}: STM checkpoint not found")
    try:
        net = load_segmenter(path, kind="stm")
    except ValueError as e:
        if checkpoint_kind(path) != "pretraining":
            raise
        raise ValueError(
            f"ckpt={path} is a corrflow pretraining checkpoint (tools/train.py), not an STM segmenter checkpoint: "
            f"propagate labels with its features (method=label_propagation features=checkpoint ckpt={path}) "
            f"or fine-tune STM from it (tools/finetune.py experiment=stm_static model.backbone.init={path})"
        ) from e
    return STMVideoSegmenter(net, memory_every=memory_every, max_memory_frames=max_memory_frames, device=device, short_side=short_side)


def _load_osvos(path: Path, *, kind: str, key: str) -> nn.Module:
    """The OSVOS network of ``kind`` ('osvos': the parent, 'osvos_contour': the contour branch) in the
    file given as ``key``; other kinds of checkpoint are errors that say what to pass instead."""
    from corrflow.models.backbone import checkpoint_kind
    from corrflow.models.segmenters import load_segmenter

    what = {"osvos": "an OSVOS parent checkpoint", "osvos_contour": "an OSVOS contour-branch checkpoint"}[kind]
    experiment = {"osvos": "osvos_parent", "osvos_contour": "osvos_contour"}[kind]
    if not path.is_file():
        raise FileNotFoundError(f"{key}={path}: {what} not found")
    found = checkpoint_kind(path)
    if found == "pretraining":
        raise ValueError(
            f"{key}={path} is a corrflow pretraining checkpoint (tools/train.py), not {what}: "
            f"train one from it with `tools/finetune.py experiment={experiment} model.backbone.init={path}`"
        )
    if found == "osvos_contour" and kind == "osvos":
        raise ValueError(f"{key}={path} is an OSVOS contour-branch checkpoint, not a parent one: pass it as method.contour_ckpt=, "
                         "and the parent (tools/finetune.py experiment=osvos_parent) as ckpt=")  # fmt: skip
    if found == "osvos" and kind == "osvos_contour":
        raise ValueError(f"{key}={path} is an OSVOS parent checkpoint, not a contour branch: pass it as ckpt=, and a contour "
                         "branch (tools/finetune.py experiment=osvos_contour) as method.contour_ckpt=")  # fmt: skip
    if found is not None and found != kind:
        raise ValueError(f"{key}={path} is an {found.upper()} segmenter checkpoint, not {what}: segment with it by method={found}")
    return load_segmenter(path, kind=kind)


def osvos(
    *,
    ckpt: str | os.PathLike | None,
    finetune: dict[str, Any],
    optimizer: Callable[..., torch.optim.Optimizer],
    threshold: float = 0.5,
    batch_frames: int = 8,
    short_side: int | None = None,
    keep_weights: bool = False,
    weights_dir: str | os.PathLike | None = None,
    boundary_snapping: bool = False,
    contour_ckpt: str | os.PathLike | None = None,
    superpixels: dict[str, Any] | None = None,
    seed: int = 0,
    device: torch.device,
    targets: Any,
) -> Any:
    """OSVOS from a parent checkpoint (``ckpt=``, ``tools/finetune.py experiment=osvos_parent``),
    for object masks; with ``boundary_snapping``, snapped onto the superpixels of a contour branch
    (``contour_ckpt``, ``experiment=osvos_contour``).

    Args:
        finetune: the one-shot fine-tuning's ``steps``, ``batch_size``, ``degrees``, ``scale``, ``hflip``.
        optimizer: a partial optimizer for it.
        threshold: the background threshold on the objects' probabilities.
        batch_frames: frames segmented in one forward pass.
        short_side: None: work at each frame's size; an int: the working size's shorter side.
        keep_weights, weights_dir: keep each video's fine-tuned weights, as ``<weights_dir>/<video>.pt``.
        superpixels: ``n_segments`` and ``compactness`` of the snapping's watershed.

    Raises:
        ValueError: no ``ckpt``, a checkpoint of another kind (saying what to pass), snapping without
        a contour branch, targets that are not object masks.
        FileNotFoundError: a checkpoint file that does not exist.
    """
    from corrflow.propagation.osvos import OSVOSVideoSegmenter

    require_masks(targets, "osvos")
    if keep_weights and not weights_dir:
        raise ValueError("method.keep_weights=true needs a folder for the weights (method.segmenter.weights_dir)")
    if not ckpt:
        raise ValueError("method=osvos needs an OSVOS parent checkpoint: ckpt=<tools/finetune.py experiment=osvos_parent run>/checkpoints/final.ckpt")
    parent = _load_osvos(Path(ckpt), kind="osvos", key="ckpt")
    contour = None
    if boundary_snapping:
        if not contour_ckpt:
            raise ValueError(
                "method.boundary_snapping=true needs the contour branch: method.contour_ckpt=<tools/finetune.py "
                "experiment=osvos_contour run>/checkpoints/final.ckpt"
            )
        contour = _load_osvos(Path(contour_ckpt), kind="osvos_contour", key="method.contour_ckpt")
    return OSVOSVideoSegmenter(
        parent, optimizer=optimizer, threshold=threshold, contour=contour, seed=seed, device=device, batch_frames=batch_frames,
        short_side=short_side, keep_weights=weights_dir if keep_weights else None, **dict(finetune), **dict(superpixels or {})
    )


def checkpoint_tag(path: str | os.PathLike | None) -> str:
    """A checkpoint's name for an output folder: its stem, after its run folder's name when it sits
    in a ``checkpoints/`` folder (``<run>/checkpoints/final.ckpt`` -> ``<run>-final``); 'none'."""
    if not path:
        return "none"
    p = Path(str(path))
    if p.parent.name == "checkpoints" and p.parent.parent.name:
        return f"{p.parent.parent.name}-{p.stem}"
    return p.stem
