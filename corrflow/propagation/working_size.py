"""The working size of a segmenter method (``method.short_side``): each frame resized, aspect kept,
so that its shorter side has ``short_side`` pixels; the network works there and its probabilities
come back at the frame's own size, where the scores are taken.

STM and OSVOS (:mod:`corrflow.propagation.methods`, :mod:`corrflow.propagation.osvos`) share it:
time and memory a frame fall with the square of the scale, and a network fine-tuned on small crops
sees frames at the scale it was trained at.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from corrflow.data.vos.davis_resized import short_side_size

__all__ = ["WorkingSize"]


class WorkingSize:
    """Resizing between a frame's size and the working size.

    Args:
        short_side: None: the frame's own size (every method here is the identity); an int of at
            least 16: the working size's shorter side, in pixels.

    Raises:
        ValueError: a ``short_side`` under 16 pixels.
    """

    def __init__(self, short_side: int | None) -> None:
        if short_side is not None and int(short_side) < 16:
            raise ValueError(f"short_side must be at least 16 pixels (or null for the frame's own size), got {short_side}")
        self.short_side = None if short_side is None else int(short_side)

    def size(self, hw: tuple[int, int]) -> tuple[int, int]:
        """The (h, w) the network sees for a frame of size ``hw``."""
        return short_side_size(hw, self.short_side)

    def _resize(self, x: Tensor, hw: tuple[int, int], mode: str) -> Tensor:
        if tuple(x.shape[-2:]) == tuple(hw):
            return x
        kwargs = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
        return F.interpolate(x[None].float(), size=hw, mode=mode, **kwargs)[0]

    def frame(self, x: Tensor) -> Tensor:
        """(3, H, W) image -> (3, h, w), bilinear with anti-aliasing."""
        return self._resize(x, self.size((x.shape[-2], x.shape[-1])), "bilinear")

    def masks(self, x: Tensor) -> Tensor:
        """(N, H, W) masks in [0, 1] -> (N, h, w), area-averaged (a small object keeps some weight)."""
        return self._resize(x, self.size((x.shape[-2], x.shape[-1])), "area")

    def back(self, probs: Tensor, hw: tuple[int, int]) -> Tensor:
        """(D, h, w) probabilities -> (D, H, W) at the frame's size ``hw``, bilinear (a distribution
        over D stays one)."""
        if tuple(probs.shape[-2:]) == tuple(hw):
            return probs
        return F.interpolate(probs[None].float(), size=tuple(hw), mode="bilinear", align_corners=False)[0].to(probs.dtype)

    def __repr__(self) -> str:
        return f"WorkingSize(short_side={self.short_side})"

