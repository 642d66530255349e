"""OSVOS: one-shot video object segmentation (Caelles et al., CVPR 2017), on a
:class:`~corrflow.models.backbone.SegmentationBackbone`.

A fully convolutional network over the backbone's last ``n_sides`` distinct side stages
(:attr:`SegmentationBackbone.distinct_side_stages`; VGG's stages 2-5 in the paper; at most four by
default, so three on the CRW variant, whose head is the identity and would read layer3's tensor
again): each stage's map goes
through a 3x3 convolution to ``side_channels`` (16, as the public PyTorch port), a 1x1 convolution
makes its side output, and the concatenation of the prepared maps, bilinearly upsampled to the
input, is fused by a 1x1 convolution into the output. Every logit is at the input's resolution.

The fusion is linear, and so is bilinear upsampling, so the 1x1 fuse is applied to each side at
its own resolution and the (1-channel) results are upsampled and summed: the same numbers as
upsampling the ``n_sides * side_channels`` maps first, at a fraction of the memory.

The same network, trained on mask boundaries, is OSVOS's contour branch (boundary snapping).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from corrflow.models.backbone import SegmentationBackbone
from corrflow.utils.grid import pad_to_stride

__all__ = ["OSVOSNet", "OSVOSOutput"]


@dataclass
class OSVOSOutput:
    """sides (B, S, H, W) the side outputs' logits (shallow to deep); fused (B, 1, H, W) the output logit."""

    sides: Tensor
    fused: Tensor


class OSVOSNet(nn.Module):
    """
    Args:
        backbone: the feature network (no extra inputs).
        n_sides: side outputs, on the backbone's last ``n_sides`` distinct side stages (4 in the
            paper); None: four, or all of them where the backbone has fewer (the CRW variant: 3).
        side_channels: width of each side's 3x3 preparation (16 in the PyTorch port).
        stages: the side stages by name instead (any of ``backbone.side_stages``, shallow to
            deep); ``config`` records them, so a checkpoint rebuilds the same sides.

    ``forward(image (B, 3, H, W) RGB in [0, 1])`` -> :class:`OSVOSOutput` at (H, W), any H, W:
    the frame is padded (bottom, right, replicating the border) to a multiple of the backbone's
    stride and the logits cropped back.

    Raises:
        ValueError: a backbone with extra inputs, fewer distinct side stages than ``n_sides``
            (naming them), or ``stages`` that are not side stages of the backbone.
    """

    def __init__(
        self, *, backbone: SegmentationBackbone, n_sides: int | None = None, side_channels: int = 16, stages: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        if backbone.extra_in_channels:
            raise ValueError("OSVOS takes RGB only: give a backbone with extra_in_channels=0")
        if stages is not None:
            stages = tuple(str(s) for s in stages)
            order = backbone.side_stages
            if not stages or any(s not in order for s in stages) or list(stages) != sorted(set(stages), key=order.index):
                raise ValueError(f"stages must be distinct side stages of the backbone, shallow to deep ({', '.join(order)}), got {list(stages)}")
            if n_sides is not None and n_sides != len(stages):
                raise ValueError(f"n_sides={n_sides} but {len(stages)} stages are named ({', '.join(stages)})")
        else:
            distinct = backbone.distinct_side_stages
            same = [s for s in backbone.side_stages if s not in distinct]
            n = min(4, len(distinct)) if n_sides is None else int(n_sides)
            if not 1 <= n <= len(distinct):
                repeats = f"; {', '.join(same)} only repeat{'s' if len(same) == 1 else ''} the stage before" if same else ""
                raise ValueError(
                    f"n_sides={n}, but the backbone has {len(distinct)} distinct side stages ({', '.join(distinct)}{repeats}); "
                    "lower model.net.n_sides (null: as many as there are, at most 4) or raise model.backbone.max_stride"
                )
            stages = distinct[-n:]
        n_sides = len(stages)
        self.config: dict[str, Any] = {"n_sides": n_sides, "side_channels": side_channels, "stages": list(stages)}
        self.backbone = backbone
        self.stages = tuple(stages)
        self.stride = backbone.stride
        keys = [self._key(s) for s in self.stages]
        self.prep = nn.ModuleDict({k: nn.Conv2d(backbone.stage_channels[s], side_channels, 3, padding=1) for k, s in zip(keys, self.stages, strict=True)})
        self.score = nn.ModuleDict({k: nn.Conv2d(side_channels, 1, 1) for k in keys})
        self.fuse = nn.Conv2d(n_sides * side_channels, 1, 1)

    @staticmethod
    def _key(stage: str) -> str:
        return stage.replace(".", "_")  # ModuleDict keys may not hold dots

    def fuse_weights(self, index: int) -> Tensor:
        """The fuse convolution's (1, side_channels, 1, 1) slice for side ``index``."""
        c = self.config["side_channels"]
        return self.fuse.weight[:, index * c : (index + 1) * c]

    def forward(self, image: Tensor) -> OSVOSOutput:
        h, w = image.shape[-2:]
        x = pad_to_stride(image, self.stride)
        feats = self.backbone.forward_stages(x)
        size = x.shape[-2:]
        sides, fused = [], None
        for i, stage in enumerate(self.stages):
            prep = self.prep[self._key(stage)](feats[stage])  # (B, C, H/s, W/s)
            part = F.conv2d(prep, self.fuse_weights(i))  # the fuse's share, before upsampling
            score = self.score[self._key(stage)](prep)
            both = F.interpolate(torch.cat([score, part], dim=1), size=size, mode="bilinear", align_corners=False)
            sides.append(both[:, :1])
            fused = both[:, 1:] if fused is None else fused + both[:, 1:]
        fused = fused + self.fuse.bias.view(1, 1, 1, 1)
        return OSVOSOutput(sides=torch.cat(sides, dim=1)[..., :h, :w], fused=fused[..., :h, :w])

