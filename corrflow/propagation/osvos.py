"""OSVOS at test time: per video, a copy of the parent network fine-tuned on the first frame of
each object (one-shot), then every frame segmented independently; optionally snapped onto the
contour branch's superpixels (:mod:`corrflow.propagation.boundary_snapping`).

:class:`OSVOSVideoSegmenter` is the :class:`~corrflow.propagation.methods.VideoSegmenter` that
``tools/propagate.py method=osvos`` runs: the one-shot fine-tuning happens at the first frame's
step (the step that brings its labels), the other steps segment.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision import tv_tensors

from corrflow.data.vos.static import affine_augmentation
from corrflow.losses.class_balanced_bce import ClassBalancedBCE, deep_supervision_loss
from corrflow.models.segmenters.osvos import OSVOSNet
from corrflow.propagation.boundary_snapping import snap_to_contours
from corrflow.propagation.working_size import WorkingSize
from corrflow.utils.seeding import derive_seed, seeded_cpu_rng

__all__ = ["OSVOSVideoSegmenter", "combine_objects", "one_shot_finetune"]

log = logging.getLogger(__name__)


def one_shot_finetune(
    parent: OSVOSNet,
    image: Tensor,
    mask: Tensor,
    *,
    steps: int,
    optimizer: Callable[..., torch.optim.Optimizer],
    batch_size: int = 1,
    degrees: float = 30.0,
    scale: Sequence[float] = (0.75, 1.25),
    hflip: float = 0.5,
    loss: nn.Module | None = None,
    deep_supervision: bool = False,
    seed: int = 0,
) -> OSVOSNet:
    """A copy of ``parent`` fine-tuned on one frame and its object's mask (OSVOS's one-shot step).

    Each of the ``steps`` optimizer steps sees ``batch_size`` augmentations of the frame (rotation
    +-``degrees``, zoom in ``scale``, a flip with probability ``hflip``; image and mask through
    one transform, :func:`~corrflow.data.vos.static.affine_augmentation`). The loss is the fused
    output's alone (class-balanced BCE), as both OSVOS releases fine-tune (their side outputs
    supervise the parent's training only); with ``deep_supervision`` it is
    :func:`~corrflow.losses.class_balanced_bce.deep_supervision_loss`, the side weight falling
    linearly from 1 to 0 over the steps. ``parent`` is left unchanged.

    Args:
        parent: the parent network.
        image: (3, H, W) RGB in [0, 1].
        mask: (H, W) the object's mask (> 0.5: the object).
        steps: optimizer steps (0: the parent's copy as it is).
        optimizer: a partial optimizer taking ``params``.
        deep_supervision: add the side outputs' losses (weight 1 -> 0), as the parent's training.
        seed: the augmentations' random draws (torch's CPU generator, restored afterwards).

    Returns:
        the fine-tuned copy, in eval mode.
    """
    if image.ndim != 3 or image.shape[0] != 3 or mask.shape != image.shape[-2:]:
        raise ValueError(f"image must be (3, H, W) and mask (H, W) of the same size, got {tuple(image.shape)} and {tuple(mask.shape)}")
    net = copy.deepcopy(parent).train()
    if steps <= 0:
        return net.eval()
    loss = loss if loss is not None else ClassBalancedBCE()
    opt = optimizer(params=[p for p in net.parameters() if p.requires_grad])
    augment = affine_augmentation(degrees=degrees, scale=scale, hflip=hflip)
    img, target = tv_tensors.Image(image.float()), tv_tensors.Mask((mask > 0.5).to(torch.uint8))
    with torch.enable_grad(), seeded_cpu_rng(seed):
        for i in range(steps):
            pairs = [augment(img, target) for _ in range(batch_size)]
            x = torch.stack([p[0].as_subclass(Tensor) for p in pairs])
            t = torch.stack([p[1].as_subclass(Tensor) for p in pairs]).long()
            out = net(x)
            if deep_supervision:
                total = deep_supervision_loss(out.sides, out.fused, t, side_weight=1.0 - i / steps, loss=loss)["loss"]
            else:
                total = loss(out.fused, t)
            if not torch.isfinite(total):
                raise FloatingPointError(f"one-shot fine-tuning: non-finite loss at step {i}; lower method.optimizer.lr")
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
    return net.eval()


def combine_objects(probs: Tensor, *, threshold: float) -> Tensor:
    """Per-object foreground probabilities -> labels over background + objects: a pixel is the
    object of the highest probability where that reaches ``threshold``, else background.

    Args:
        probs: (N, H, W) each object's one-shot network's probability.

    Returns:
        (1 + N, H, W): channel 0 is ``threshold`` everywhere, then ``probs``, so that the
        arg-max over channels (ties: the lower channel) is that rule.
    """
    return torch.cat([torch.full_like(probs[:1], threshold), probs], dim=0)


class OSVOSVideoSegmenter:
    """OSVOS behind the :class:`~corrflow.propagation.methods.VideoSegmenter` steps (``stride`` 1).

    The first frame's step fine-tunes one copy of the parent per object (:func:`one_shot_finetune`,
    each from its own seed, derived from ``seed`` and the object's channel, so a video's result
    does not depend on the videos before it); the other steps run each copy on the frame
    (independently of every other frame) and combine them (:func:`combine_objects`). With a
    ``contour`` network, the arg-max labels are snapped onto the superpixels of its contour map
    and returned one-hot. The fine-tuned copies live until the next video starts.

    Frames are segmented ``batch_frames`` at a time (:meth:`segment_many`; the run loop batches
    the frames of a segmenter that has ``batch_frames``, since OSVOS's frames do not depend on each
    other). With ``short_side``, the fine-tuning and the segmentation work on frames resized so
    that their shorter side has that many pixels (:class:`~corrflow.propagation.working_size.WorkingSize`):
    the parent's training crops' scale, and time falling with the square of the scale; the
    probabilities (and the contour map) come back at the frame's size, where snapping and the
    scores happen.

    An object that exists at the frame's size but vanishes at the working size (no pixel of its
    area-resized mask above 0.5: its target would be all background, and the class-balanced loss
    of a target without foreground is 0, so nothing would be fine-tuned) is fine-tuned and
    segmented at the smallest working size where it exists (``short_side`` doubled until it does,
    else the frame's own size), with a warning; the other objects stay at ``short_side``.

    A first frame without objects: a warning, and background for the whole video.

    Args:
        parent: the parent network (:func:`~corrflow.models.segmenters.load_segmenter`, kind 'osvos').
        steps, optimizer, batch_size, degrees, scale, hflip: the one-shot fine-tuning.
        deep_supervision: the one-shot loss adds the side outputs' (False: the fused output's
            alone, as the releases; :func:`one_shot_finetune`).
        threshold: the background threshold on the objects' probabilities.
        contour: the contour branch (kind 'osvos_contour'), or None: no snapping.
        n_segments, compactness: the superpixels (:func:`~corrflow.propagation.boundary_snapping.contour_superpixels`).
        seed: the fine-tuning's augmentations.
        device: where the networks and frames live.
        batch_frames: frames segmented in one forward pass.
        short_side: None, the frame's own size; or the working size's shorter side.
        keep_weights: None: the fine-tuned copies are dropped with their video; a folder: each
            video's are saved there as ``<video>.pt`` (``{"objects": [state_dict, ...],
            "short_sides": [...]}``, the targets' object order, each object's working short side:
            None for the frame's size), to be loaded into the parent's architecture.
    """

    stride = 1

    def __init__(
        self,
        parent: OSVOSNet,
        *,
        steps: int = 100,
        optimizer: Callable[..., torch.optim.Optimizer],
        batch_size: int = 1,
        degrees: float = 30.0,
        scale: Sequence[float] = (0.75, 1.25),
        hflip: float = 0.5,
        deep_supervision: bool = False,
        threshold: float = 0.5,
        contour: OSVOSNet | None = None,
        n_segments: int = 1500,
        compactness: float = 0.0,
        seed: int = 0,
        device: torch.device | str = "cpu",
        batch_frames: int = 8,
        short_side: int | None = None,
        keep_weights: str | os.PathLike | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        self.device = torch.device(device)
        self.parent = parent.to(self.device).eval()
        self.contour = contour.to(self.device).eval() if contour is not None else None
        self.finetune_kwargs = dict(steps=int(steps), optimizer=optimizer, batch_size=int(batch_size), degrees=degrees, scale=tuple(scale),
                                    hflip=hflip, deep_supervision=bool(deep_supervision))  # fmt: skip
        self.threshold, self.n_segments, self.compactness, self.seed = float(threshold), int(n_segments), float(compactness), int(seed)
        if int(batch_frames) < 1:
            raise ValueError(f"batch_frames must be at least 1, got {batch_frames}")
        self.batch_frames = int(batch_frames)
        self.resize = WorkingSize(short_side)
        if self.device.type == "cpu" and short_side is None and int(steps) >= 200:
            log.warning(
                "OSVOS on the CPU at the frames' own size: %d one-shot steps take about 3 s each at 480p, per object; "
                "method.short_side=128 makes a step about 0.1-1.5 s (docs/results.md: OSVOS on DAVIS-2016 dev)", int(steps)
            )
        self.keep_weights = None if keep_weights is None else Path(keep_weights)
        self.video: str | None = None
        self.models: list[OSVOSNet] = []
        self.sizes: list[WorkingSize] = []  # each object's working size (``resize`` unless it vanished there)
        self.finetune_seconds = 0.0  # the last video's one-shot fine-tuning, all objects
        self._empty: tuple[int, ...] | None = None

    def begin_video(self, name: str) -> None:
        """The next video's name (the run calls this before its first step): where kept weights go."""
        self.video = str(name)

    def size_where_it_exists(self, mask: Tensor) -> WorkingSize:
        """For an (H, W) mask that vanishes at ``short_side``: the smallest working size,
        ``short_side`` doubled, at which it keeps a pixel above 0.5 after area resizing; the
        frame's own size when none smaller does."""
        side = self.resize.short_side
        while side is not None:
            side *= 2
            if side >= min(mask.shape[-2:]):
                break
            size = WorkingSize(side)
            if bool((size.masks(mask[None]) > 0.5).any()):
                return size
        return WorkingSize(None)

    def start(self, frame: Tensor, objects: Tensor) -> None:
        """Fine-tune one copy of the parent per object: ``frame`` (3, H, W), ``objects`` (N, H, W) masks."""
        frame, objects = frame.to(self.device, torch.float32), objects.to(self.device, torch.float32)
        image, small = self.resize.frame(frame), self.resize.masks(objects)
        self.sizes = []
        for k in range(objects.shape[0]):
            size = self.resize
            if not bool((small[k] > 0.5).any()) and bool((objects[k] > 0.5).any()):
                size = self.size_where_it_exists(objects[k])
                log.warning(
                    "%s: object %d vanishes at method.short_side=%s (no pixel of its mask above 0.5 after area resizing, "
                    "%d pixels at the frame's %dx%d): fine-tuned and segmented at %s instead",
                    self.video or "video", k + 1, self.resize.short_side, int((objects[k] > 0.5).sum()), objects.shape[-2], objects.shape[-1],
                    "the frame's own size" if size.short_side is None else f"short side {size.short_side}",
                )  # fmt: skip
            self.sizes.append(size)
        t0 = time.perf_counter()
        self.models = []
        for k, size in enumerate(self.sizes):
            img, mask = (image, small[k]) if size is self.resize else (size.frame(frame), size.masks(objects[k : k + 1])[0])
            self.models.append(one_shot_finetune(self.parent, img, mask, seed=derive_seed(self.seed, "osvos-object", k), **self.finetune_kwargs))
        self.finetune_seconds = time.perf_counter() - t0
        log.info("one-shot fine-tuning: %d object(s) x %d steps in %.1f s", len(self.models), self.finetune_kwargs["steps"], self.finetune_seconds)
        if self.keep_weights is not None:
            self.keep_weights.mkdir(parents=True, exist_ok=True)
            path = self.keep_weights / f"{self.video or 'video'}.pt"
            tmp = path.with_suffix(".pt.tmp")
            torch.save({"objects": [m.state_dict() for m in self.models], "short_sides": [z.short_side for z in self.sizes]}, tmp)
            tmp.replace(path)  # a crash mid-write leaves no half file under the final name
            log.info("fine-tuned weights kept: %s", path)

    @torch.no_grad()
    def segment_many(self, frames: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1 + N, H, W) labels of the video's objects in each frame (see the class
        docstring), ``batch_frames`` at a time."""
        if not self.models:
            raise RuntimeError("the first step of a video needs its labels: step(frame, labels)")
        out = []
        for chunk in frames.split(self.batch_frames):
            hw = (chunk.shape[-2], chunk.shape[-1])
            chunk = chunk.to(self.device, torch.float32)
            sizes = {z.short_side: z for z in (*self.sizes, self.resize)}  # each working size in use, once
            resized = {side: torch.stack([z.frame(f) for f in chunk]) for side, z in sizes.items()}
            probs = [torch.sigmoid(m(resized[z.short_side]).fused.float()) for m, z in zip(self.models, self.sizes, strict=True)]  # N x (b, 1, h_k, w_k)
            contours = torch.sigmoid(self.contour(resized[self.resize.short_side]).fused.float()) if self.contour is not None else None  # (b, 1, h, w)
            for i in range(len(chunk)):
                labels = combine_objects(torch.cat([z.back(p[i], hw) for p, z in zip(probs, self.sizes, strict=True)]), threshold=self.threshold)
                if contours is not None:
                    contour = self.resize.back(contours[i], hw)[0]
                    ids = snap_to_contours(labels.argmax(0), contour, n_segments=self.n_segments, compactness=self.compactness)
                    labels = torch.nn.functional.one_hot(ids, labels.shape[0]).permute(2, 0, 1).float()
                out.append(labels)
        return torch.stack(out)

    def step_many(self, frames: Tensor) -> Tensor:
        """(B, 3, H, W) frames after the first -> (B, 1 + N, H, W), as :meth:`step` on each."""
        if self._empty is not None:
            out = torch.zeros((frames.shape[0], *self._empty), device=self.device)
            out[:, 0] = 1.0
            return out
        return self.segment_many(frames)

    def step(self, frame: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is not None:
            if labels.ndim != 3 or labels.shape[-2:] != frame.shape[-2:]:
                raise ValueError(f"labels must be (1 + N, {frame.shape[-2]}, {frame.shape[-1]}) at the frame's pixels, got {tuple(labels.shape)}")
            self.models, self.sizes = [], []
            if labels.shape[0] == 1 or not bool((labels[1:] > 0.5).any()):
                log.warning("the first frame has no object: the video's predictions are background")
                self._empty = (1, *labels.shape[1:])
                return labels.to(self.device, torch.float32)
            self._empty = None
            self.start(frame, labels[1:])
            return labels.to(self.device, torch.float32)
        return self.step_many(frame[None])[0]
