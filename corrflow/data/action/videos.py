"""Action-recognition videos in the class-per-folder layout (UCF-101, HMDB-51, Kinetics):
``<root>/<class>/<video>`` where a video is a file (decord or PyAV) or a folder of frames.

Each item is ``n_segments`` frames, one from each of as many equal segments of the video (TSN
sampling): a random frame of each segment in training, the middle one otherwise. A split file
(UCF-101's ``trainlist01.txt`` / ``testlist01.txt`` form: ``<class>/<video> [label]`` a line,
relative to the root) selects the videos; without one, every ``val_every``-th video of each class
(in name order) is the validation split and the rest the training split.

A video that cannot be read is skipped with a warning naming it: the item is replaced by another
video of the split and its ``skipped`` field counts the failure (reported at the epoch's end).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from corrflow.data.video.readers import VideoReadError, num_frames, read_frames
from corrflow.data.video.resize import resize_frames
from corrflow.data.video.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoSource, list_frames

log = logging.getLogger(__name__)

__all__ = ["ActionVideoDataset", "find_classes", "segment_indices"]

SPLITS = ("train", "val")


def segment_indices(n_frames: int, n_segments: int, *, rng: random.Random | None = None) -> list[int]:
    """One frame index from each of ``n_segments`` equal segments of ``n_frames`` frames: a random
    one with ``rng``, else each segment's middle. Videos shorter than ``n_segments`` repeat frames."""
    if n_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {n_frames}")
    edges = np.linspace(0, n_frames, n_segments + 1)
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        lo, hi = int(a), max(int(a), int(np.ceil(b)) - 1)
        out.append(rng.randint(lo, hi) if rng is not None else int((a + b) / 2))
    return [min(i, n_frames - 1) for i in out]


def find_classes(root: str | os.PathLike) -> list[str]:
    """The class names: the sub-folders of ``root``, in name order.

    Raises:
        FileNotFoundError: no folder at ``root``. ValueError: no class folders in it.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root not found (a folder of class folders expected): {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class folders (expected <root>/<class>/<video file or frame folder>)")
    return classes


def _videos_of(class_dir: Path) -> list[VideoSource]:
    out = []
    for p in sorted(class_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            out.append(VideoSource(str(p), "video"))
        elif p.is_dir() and list_frames(p):
            out.append(VideoSource(str(p), "frames"))
    return out


def _entry_source(root: Path, rel: str, split_file: Path) -> VideoSource:
    p = root / rel
    if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
        return VideoSource(str(p), "video")
    if p.is_dir():
        return VideoSource(str(p), "frames")
    raise FileNotFoundError(f"{split_file}: video {rel!r} not found under {root}")


class ActionVideoDataset(Dataset):
    """Class-per-folder videos as (n_segments, 3, h, w) clips and a class label.

    Args:
        root: ``<root>/<class>/<video>``.
        split: 'train' (random frame in each segment) or 'val' (middle frames).
        split_file: UCF-101-style list of the split's videos (relative to ``root``); None: every
            ``val_every``-th video of each class is 'val', the others 'train'.
        n_segments: frames per clip (one per segment).
        size: (h, w) every frame is resized to.
        val_every: see ``split_file``.
        decoder: video files: 'auto', 'decord' or 'pyav'.

    Items: ``{"frames": (n_segments, 3, h, w) float in [0, 1], "label": int, "skipped": int}``.
    Attributes: ``classes`` (names, label order), ``sources``, ``labels``.
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike,
        split: str = "train",
        split_file: str | os.PathLike | None = None,
        n_segments: int = 8,
        size: Sequence[int] = (112, 112),
        val_every: int = 5,
        decoder: str = "auto",
        max_retries: int = 10,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if n_segments < 1:
            raise ValueError(f"n_segments must be >= 1, got {n_segments}")
        root = Path(root)
        self.classes = find_classes(root)
        index = {c: i for i, c in enumerate(self.classes)}
        pairs: list[tuple[VideoSource, int]] = []
        if split_file is not None:
            split_file = Path(split_file)
            if not split_file.is_file():
                raise FileNotFoundError(f"split file not found: {split_file}")
            for n, line in enumerate(split_file.read_text().splitlines(), start=1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                rel = line.split()[0]
                cls = Path(rel).parts[0]
                if cls not in index:
                    raise ValueError(f"{split_file}:{n}: class folder {cls!r} of {rel!r} is not under {root}")
                pairs.append((_entry_source(root, rel, split_file), index[cls]))
        else:
            if val_every < 2:
                raise ValueError(f"val_every must be >= 2, got {val_every}")
            for cls in self.classes:
                videos = _videos_of(root / cls)
                keep = [v for i, v in enumerate(videos) if (i % val_every == val_every - 1) == (split == "val")]
                pairs += [(v, index[cls]) for v in keep]
        if not pairs:
            raise ValueError(
                f"{root}: no {split} videos (video files {', '.join(VIDEO_EXTENSIONS)} or folders of "
                f"{', '.join(IMAGE_EXTENSIONS)} frames under <root>/<class>/)"
            )
        self.sources = [VideoSource(s.path, s.kind, decoder) if s.kind == "video" else s for s, _ in pairs]
        self.labels = [label for _, label in pairs]
        self.split, self.n_segments, self.size = split, int(n_segments), tuple(int(s) for s in size)
        self.max_retries = int(max_retries)

    def __len__(self) -> int:
        return len(self.sources)

    def _read(self, i: int, rng: random.Random | None) -> torch.Tensor:
        source = self.sources[i]
        n = num_frames(source)
        if n < 1:
            raise VideoReadError(f"{source.path}: no frames")
        idx = segment_indices(n, self.n_segments, rng=rng)
        return resize_frames(read_frames(source, idx), self.size)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``key``: an index, or ``(index, draw_seed)`` as ``ResumableClipSampler`` yields it: the
        training frames and any replacement video are drawn from ``random.Random(draw_seed)``."""
        index, draw_seed = key if isinstance(key, tuple) else (key, None)
        rng = random.Random(draw_seed) if draw_seed is not None and self.split == "train" else None
        skipped, i = 0, index
        for _ in range(self.max_retries + 1):
            try:
                return {"frames": self._read(i, rng), "label": self.labels[i], "skipped": skipped}
            except VideoReadError as e:
                log.warning("skipping an unreadable video: %s", e)
                skipped += 1
                i = (rng or random.Random(index * 1000 + skipped)).randrange(len(self))
        raise VideoReadError(f"{self.max_retries + 1} videos in a row could not be read (the last: {self.sources[i].path})")
