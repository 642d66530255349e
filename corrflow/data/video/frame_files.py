"""Videos held as frame files: the image files of a frame folder, reading one frame, and the
records the evaluation data sets (DAVIS, YouTube-VOS, the keypoint sets) build their videos from
(:class:`FrameFiles`, :class:`AnnotatedFrameFiles`, :class:`VideoSet`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

__all__ = ["FRAME_EXTENSIONS", "AnnotatedFrameFiles", "FrameFiles", "VideoSet", "frame_size", "list_frame_files", "read_frame"]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


def read_frame(path: Path, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB; ``size`` (H, W) is checked when given. Errors name the file."""
    try:
        with Image.open(path) as im:
            frame = np.array(im.convert("RGB"))
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read frame ({e})") from e
    if size is not None and frame.shape[:2] != tuple(size):
        raise ValueError(f"{path}: frame is {frame.shape[1]}x{frame.shape[0]}, the video's first frame is {size[1]}x{size[0]}")
    return frame


def frame_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image, from its header."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read frame ({e})") from e


def list_frame_files(folder: Path) -> list[Path]:
    """The sorted image files of a frame folder.

    Raises:
        FileNotFoundError: the folder is missing or holds no frame.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"frames folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no frames ({'/'.join(FRAME_EXTENSIONS)} files)")
    return files


class FrameFiles:
    """What a video held as frame files (``frame_paths``, in order) can do: its length, its size
    (the first frame's, read once; every frame must share it) and its frames, (H, W, 3) uint8 RGB.
    Mixed into the data sets' frozen video dataclasses."""

    frame_paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.frame_paths)

    @cached_property
    def size(self) -> tuple[int, int]:
        """(H, W) of the first frame (all frames must share it)."""
        return frame_size(self.frame_paths[0])

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` (for propagating backward from a later keyframe)."""
        return read_frame(self.frame_paths[t], size=self.size)

    def frames(self, start: int = 0) -> Iterator[np.ndarray]:
        """Frames from ``start`` on, read one at a time."""
        size = self.size
        for path in self.frame_paths[start:]:
            yield read_frame(path, size=size)


class AnnotatedFrameFiles(FrameFiles):
    """Frame files with a folder of per-frame annotations (``annotation_dir``), each PNG named after
    its frame's file stem: where they are and which frames have one."""

    annotation_dir: Path

    def annotation_path(self, t: int) -> Path:
        """Where frame ``t``'s annotation is (or would be)."""
        return self.annotation_dir / f"{self.frame_paths[t].stem}.png"

    @property
    def given_frames(self) -> list[int]:
        """Indices of the frames that have an annotation file."""
        return [t for t in range(len(self)) if self.annotation_path(t).is_file()]


V = TypeVar("V")


class VideoSet(Sequence[V]):
    """A data set held as a list of videos (``videos``), indexed and named in that order."""

    videos: list[V]

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.videos]  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index):  # type: ignore[override]
        return self.videos[index]
