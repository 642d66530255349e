"""The information bottleneck on the encoder's input: colour dropout and colour jitter.

Defaults follow the released CorrFlow code: with probability 0.7 drop 1 or 2 of the RGB channels
(how many, and which, uniformly at random), the same channels in every frame - and, as the code
does it, for the whole batch at once (``dropout_per='batch'``; 'clip' draws per clip) - and scale
the rest by 3 / (3 - n). With probability 0.1 a clip is colour-jittered (brightness, contrast,
saturation, hue 0.1), each frame with its own random parameters as in the code
(``jitter_per_frame=True``; False shares one draw across the clip). Training only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.transforms import v2


class ColourBottleneck(nn.Module):
    def __init__(
        self,
        *,
        p_dropout: float = 0.7,
        max_dropped: int = 2,
        dropout_per: str = "batch",
        p_jitter: float = 0.1,
        brightness: float = 0.1,
        contrast: float = 0.1,
        saturation: float = 0.1,
        hue: float = 0.1,
        jitter_per_frame: bool = True,
    ) -> None:
        super().__init__()
        if dropout_per not in ("batch", "clip"):
            raise ValueError(f"dropout_per must be 'batch' or 'clip', got {dropout_per!r}")
        if not 1 <= max_dropped <= 2:
            raise ValueError(f"max_dropped must be 1 or 2, got {max_dropped}")
        self.p_dropout, self.max_dropped, self.dropout_per = p_dropout, max_dropped, dropout_per
        self.p_jitter, self.jitter_per_frame = p_jitter, jitter_per_frame
        self.jitter = v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)

    def drop_mask(self, n_clips: int, device: torch.device) -> Tensor:
        """(n_clips, 3) per-channel multipliers: 0 for dropped channels, 3 / (3 - n) for the rest."""
        draws = 1 if self.dropout_per == "batch" else n_clips
        scale = torch.ones(draws, 3)
        for i in range(draws):
            if torch.rand(()) < self.p_dropout:
                n = int(torch.randint(1, self.max_dropped + 1, ()))
                drop = torch.randperm(3)[:n]
                scale[i] = 3.0 / (3 - n)
                scale[i, drop] = 0.0
        return scale.expand(n_clips, 3).to(device) if draws == 1 else scale.to(device)

    def forward(self, frames: Tensor) -> Tensor:
        """(B, T, 3, H, W) in [0, 1] -> the same shape, bottlenecked (identity in eval mode)."""
        if not self.training:
            return frames
        out = frames.clone()
        for b in range(out.shape[0]):
            if torch.rand(()) < self.p_jitter:
                if self.jitter_per_frame:
                    out[b] = torch.stack([self.jitter(f) for f in out[b]])
                else:
                    out[b] = self.jitter(out[b])
        scale = self.drop_mask(out.shape[0], out.device)  # (B, 3)
        return out * scale[:, None, :, None, None].to(out.dtype)
