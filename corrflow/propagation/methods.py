"""What ``tools/propagate.py`` runs on each video: the ``method`` config group's builders.

A method's config (``conf/method/<name>.yaml``) holds ``segmenter``, a partial ``_target_`` that
:func:`corrflow.propagation.run.propagate` calls as ``segmenter(device=..., targets=...)`` once per
run, after the dataset and targets are built and before anything is written. It returns a
:class:`VideoSegmenter`: per-video state fed one frame at a time, the same for every method, so
the run's reading, writing, scoring, overlays and resume serve them all.

- :func:`label_propagation` (the default): the first frame's labels carried by feature
  affinities; the ``features`` and ``protocol`` groups say how (a :class:`LabelPropagator`).
- :func:`stm`: an STM segmenter trained with ``tools/finetune.py`` (:class:`STMVideoSegmenter`).

A new method (OSVOS: per-video fine-tuning, then frames segmented independently) is one more
builder here and one more ``conf/method/*.yaml``; the run does not change.

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

__all__ = ["STMVideoSegmenter", "VideoSegmenter", "checkpoint_tag", "label_propagation", "stm"]

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
    """

    stride = 1

    def __init__(self, net: nn.Module, *, memory_every: int = 5, max_memory_frames: int = 20, device: torch.device | str = "cpu") -> None:
        from corrflow.models.segmenters.stm import STMInference

        self.device = torch.device(device)
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
            return self.inference.start(frame, labels[1:].to(self.device, torch.float32))
        if self._empty is not None:
            out = torch.zeros(self._empty, device=self.device)
            out[0] = 1.0
            return out
        return self.inference.step(frame)


def stm(
    *,
    ckpt: str | os.PathLike | None,
    memory_every: int = 5,
    max_memory_frames: int = 20,
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

    if not isinstance(targets, MaskTargets):
        raise ValueError(
            f"method=stm segments object masks, but this task's targets are {type(targets).__name__}: "
            "use method=label_propagation (the default) for it"
        )
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
    return STMVideoSegmenter(net, memory_every=memory_every, max_memory_frames=max_memory_frames, device=device)


def checkpoint_tag(path: str | os.PathLike | None) -> str:
    """A checkpoint's name for an output folder: its stem, after its run folder's name when it sits
    in a ``checkpoints/`` folder (``<run>/checkpoints/final.ckpt`` -> ``<run>-final``); 'none'."""
    if not path:
        return "none"
    p = Path(str(path))
    if p.parent.name == "checkpoints" and p.parent.parent.name:
        return f"{p.parent.parent.name}-{p.stem}"
    return p.stem
