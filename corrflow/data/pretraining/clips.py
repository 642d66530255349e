"""Training clips: short runs of frames, a fixed gap apart, resized to a fixed size.

The original CorrFlow split every video into consecutive, non-overlapping clips of 3 frames 4
apart (frames 0, 4, 8 | 12, 16, 20 | ...), all of them visited each epoch: ``sampling='tiled'``.
``sampling='random'`` instead draws ``clips_per_video`` random clips from each video per epoch.

Unreadable or too-short videos are found when the dataset is built (a warning per file and a
count). A video that fails later, mid-epoch, is skipped with a warning: the item is replaced by a
clip of another video and the sample's ``skipped`` field counts the failures, so the training
loop can report them at the end of the epoch.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from corrflow.data.video.readers import VideoReadError, num_frames, read_frames
from corrflow.data.video.resize import resize_frames
from corrflow.data.video.sources import VideoSource

log = logging.getLogger(__name__)


def crop_scale_size(hw: Sequence[int], crop: Sequence[int], short_side: int | None) -> tuple[int, int]:
    """(h, w) a frame of size ``hw`` is resized to before a ``crop`` is cut from it: its shorter
    side ``short_side`` (None: its own size), aspect kept, then scaled up if needed so that the
    crop fits."""
    h, w = int(hw[0]), int(hw[1])
    s = 1.0 if short_side is None else int(short_side) / min(h, w)
    s = max(s, crop[0] / h, crop[1] / w)
    return max(int(crop[0]), round(h * s)), max(int(crop[1]), round(w * s))


class ClipDataset(Dataset):
    """Clips of ``clip_len`` frames, ``frame_gap`` apart, from a list of video sources.

    Args:
        sources: the videos.
        clip_len: frames per clip (CorrFlow: 3).
        frame_gap: distance between consecutive clip frames (CorrFlow: 4).
        size: (height, width) every frame is resized to (CorrFlow: 256 x 256), when ``crop`` is None.
        crop: (height, width) of a random crop instead (the same window in every frame of a clip):
            the frames keep their aspect and their scale (or are resized so that their shorter
            side is ``crop_short_side``), and the crop is cut from them; ``size`` is then unused.
        crop_short_side: with ``crop``, the shorter side frames are resized to first (None: their own size).
        sampling: 'tiled' (all non-overlapping clips, the original) or 'random'.
        clips_per_video: with 'random', clips drawn from each video per epoch.
        max_retries: replacement attempts after a read failure before giving up on the item.
        progress: show a progress bar while probing the videos.

    Items: ``{"frames": (clip_len, 3, h, w) float in [0, 1], "skipped": int}``.
    """

    def __init__(
        self,
        sources: Sequence[VideoSource],
        *,
        clip_len: int = 3,
        frame_gap: int = 4,
        size: Sequence[int] = (256, 256),
        sampling: str = "tiled",
        clips_per_video: int = 1,
        max_retries: int = 10,
        progress: bool = True,
        crop: Sequence[int] | None = None,
        crop_short_side: int | None = None,
    ) -> None:
        if sampling not in ("tiled", "random"):
            raise ValueError(f"sampling must be 'tiled' or 'random', got {sampling!r}")
        if clip_len < 1 or frame_gap < 1:
            raise ValueError(f"clip_len and frame_gap must be >= 1, got {clip_len} and {frame_gap}")
        self.clip_len, self.frame_gap, self.size = clip_len, frame_gap, tuple(size)
        if crop is not None and (len(crop) != 2 or min(int(c) for c in crop) < 8):
            raise ValueError(f"crop must be (height, width) of at least 8 pixels each, got {crop}")
        if crop_short_side is not None and int(crop_short_side) < 8:
            raise ValueError(f"crop_short_side must be at least 8 pixels, got {crop_short_side}")
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        self.crop_short_side = None if crop_short_side is None else int(crop_short_side)
        self.sampling, self.clips_per_video, self.max_retries = sampling, clips_per_video, max_retries
        self.span = (clip_len - 1) * frame_gap + 1
        self.videos: list[tuple[VideoSource, int]] = []  # (source, number of frames)
        self.rejected: list[tuple[str, str]] = []  # (path, reason)
        for src in tqdm(sources, desc="probing videos", disable=not progress or len(sources) < 20, leave=False):
            try:
                n = num_frames(src)
            except VideoReadError as e:
                self._reject(src.path, str(e))
                continue
            if n < self.span:
                self._reject(src.path, f"{n} frames, fewer than a clip needs ({self.span})")
                continue
            self.videos.append((src, n))
        if self.rejected:
            log.warning("skipped %d of %d videos that cannot be used (named above)", len(self.rejected), len(sources))
        if not self.videos:
            raise ValueError(
                f"none of the {len(sources)} videos can be used for {clip_len}-frame clips {frame_gap} apart"
                + (f"; e.g. {self.rejected[0][0]}: {self.rejected[0][1]}" if self.rejected else "")
            )
        self.items = self._index()

    def _reject(self, path: str, reason: str) -> None:
        self.rejected.append((path, reason))
        log.warning("skipping video %s: %s", path, reason)

    def _index(self) -> list[tuple[int, int]]:
        items = []
        for v, (_, n) in enumerate(self.videos):
            if self.sampling == "tiled":
                step = self.clip_len * self.frame_gap
                items.extend((v, s) for s in range(0, n - self.span + 1, step))
            else:
                items.extend((v, -1) for _ in range(self.clips_per_video))
        return items

    def __len__(self) -> int:
        return len(self.items)

    def clip_indices(self, index: int, rng: random.Random | None = None) -> tuple[VideoSource, list[int]]:
        """The source and frame indices of item ``index`` (a random start is drawn from ``rng``,
        or from the global ``random`` module when None)."""
        v, start = self.items[index]
        src, n = self.videos[v]
        if start < 0:
            start = (rng or random).randint(0, n - self.span)
        return src, [start + i * self.frame_gap for i in range(self.clip_len)]

    def _shape(self, frames: np.ndarray, rng: random.Random | None) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (T, 3, h, w) in [0, 1]: resized to ``size``, or a random ``crop``."""
        if self.crop is None:
            return resize_frames(frames, self.size)
        x = resize_frames(frames, crop_scale_size(frames.shape[1:3], self.crop, self.crop_short_side))
        top = (rng or random).randint(0, x.shape[-2] - self.crop[0])
        left = (rng or random).randint(0, x.shape[-1] - self.crop[1])
        return x[..., top : top + self.crop[0], left : left + self.crop[1]].contiguous()

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``key``: an item index, or ``(index, draw_seed)`` as ``ResumableClipSampler`` yields it;
        with a draw seed, the random start and any replacement after a read failure are drawn from
        ``random.Random(draw_seed)``, so they are reproducible wherever the item is loaded."""
        index, draw_seed = key if isinstance(key, tuple) else (key, None)
        rng = random.Random(draw_seed) if draw_seed is not None else None
        skipped = 0
        for _ in range(self.max_retries + 1):
            src, idx = self.clip_indices(index, rng)
            try:
                frames = read_frames(src, idx)
                return {"frames": self._shape(frames, rng), "skipped": skipped}
            except VideoReadError as e:
                skipped += 1
                log.warning("skipping a clip: %s", e)
                index = (rng or random).randrange(len(self.items))
        raise VideoReadError(f"{self.max_retries + 1} clips in a row could not be read; last error above")
