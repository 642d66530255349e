"""``VideoClassifier``: clip-level action recognition on a :class:`SegmentationBackbone` (with
MotionSqueeze inserted in it by config, and TSM's temporal shift): each of a clip's T frames is
classified from its coarsest map (global average pool, dropout, linear) and the T scores are
averaged (TSN's consensus).

:func:`load_video_classifier` rebuilds one from an MSNet checkpoint of ``tools/finetune.py
experiment=msnet`` alone: the backbone's config there records the MotionSqueeze settings
(:meth:`SegmentationBackbone.from_config`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from corrflow.models.backbone import SegmentationBackbone, load_state_exactly
from corrflow.models.checkpoint import read_checkpoint
from corrflow.models.motion.temporal_shift import add_temporal_shift
from corrflow.models.segmenters.checkpoint import FORMAT

__all__ = ["VideoClassifier", "load_video_classifier"]

KIND = "msnet"  # ActionLitModule.kind


class VideoClassifier(nn.Module):
    """
    Args:
        backbone: the per-frame network (built with ``motion=partial(MotionSqueeze, n_frames=T)``
            for MSNet).
        n_classes: K.
        n_frames: T, frames (segments) per clip.
        temporal_shift: add TSM's shift to every ResNet block of the backbone.
        dropout: before the linear layer.

    ``forward(frames)``: (B, T, 3, H, W) RGB in [0, 1] -> (B, K) logits.
    """

    def __init__(
        self, *, backbone: SegmentationBackbone, n_classes: int, n_frames: int, temporal_shift: bool = True, dropout: float = 0.5
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        motion_frames = getattr(backbone.motion, "n_frames", n_frames)
        if motion_frames != n_frames:
            raise ValueError(f"the backbone's motion module takes clips of {motion_frames} frames, the classifier {n_frames}")
        self.backbone, self.n_frames = backbone, int(n_frames)
        if temporal_shift:
            add_temporal_shift(backbone.encoder, self.n_frames)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.channels[backbone.stride], n_classes)
        self.config: dict[str, Any] = {"n_classes": int(n_classes), "n_frames": self.n_frames, "temporal_shift": bool(temporal_shift),
                                       "dropout": float(dropout), "motion": backbone.motion is not None}  # fmt: skip

    def forward(self, frames: Tensor) -> Tensor:
        b, t = frames.shape[:2]
        if t != self.n_frames or frames.dim() != 5:
            raise ValueError(f"frames must be (B, {self.n_frames}, 3, H, W), got {tuple(frames.shape)}")
        feats = self.backbone(frames.flatten(0, 1))[self.backbone.stride]  # (B*T, C, h, w)
        scores = self.fc(self.dropout(feats.mean(dim=(-2, -1))))  # (B*T, K)
        return scores.view(b, t, -1).mean(1)

    @torch.no_grad()
    def predict(self, frames: Tensor) -> Tensor:
        """(B, T, 3, H, W) -> (B, K) class probabilities."""
        return self.forward(frames).softmax(-1)


def load_video_classifier(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> VideoClassifier:
    """Rebuild the MSNet (backbone, MotionSqueeze with its recorded settings, temporal shift,
    classifier) saved in a ``tools/finetune.py experiment=msnet`` checkpoint, with its trained
    weights, in eval mode; no other file is needed.

    Raises:
        FileNotFoundError: no file. ValueError: not a corrflow checkpoint, another kind of
        checkpoint (naming it), one written before the MotionSqueeze settings were recorded, or
        weights that do not fit (naming the layers).
    """
    path = Path(path)
    ckpt, meta = read_checkpoint(path, map_location=map_location, what="MSNet checkpoint")
    if meta is None:
        raise ValueError(f"{path}: not a corrflow checkpoint (no 'corrflow' entry); train an MSNet with tools/finetune.py experiment=msnet")
    kind = meta.get("kind", "pretraining" if "encoder" in meta else None)
    if kind != KIND:
        raise ValueError(f"{path} is a {str(kind).upper()} checkpoint, not an MSNet one (tools/finetune.py experiment=msnet)")
    if meta.get("format", 0) > FORMAT:
        raise ValueError(f"{path}: checkpoint format {meta['format']} is newer than this corrflow ({FORMAT})")
    classifier = dict(meta["classifier"])
    has_motion = bool(classifier.pop("motion", False))
    if has_motion and not meta["backbone"].get("motion"):
        raise ValueError(
            f"{path}: its network has a MotionSqueeze module but the checkpoint does not record its settings "
            "(written before they were recorded), so it cannot be rebuilt from the file alone"
        )
    backbone = SegmentationBackbone.from_config(meta["backbone"])
    net = VideoClassifier(backbone=backbone, **classifier)
    prefix = meta["prefix"]
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    load_state_exactly(net, state, source=str(path))
    return net.eval()
