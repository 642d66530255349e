"""DAVIS semi-supervised video object segmentation, for label propagation.

Layout (DAVIS-2017; DAVIS-2016 is the same with ``ImageSets/2016/``)::

    <root>/JPEGImages/<resolution>/<seq>/00000.jpg ...
    <root>/Annotations/<resolution>/<seq>/00000.png ...   palette PNGs: 0 background, 1..N objects, 255 void
    <root>/ImageSets/<year>/<split>.txt                   one sequence name per line

Propagation reads the frames lazily, one at a time, and only the first frame's annotation;
:meth:`DAVISVideo.validate_annotations` checks the others (before scoring, not needed to propagate).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from corrflow.utils.io import read_indexed_png

__all__ = ["DAVISDataset", "DAVISVideo", "frame_size", "list_frame_files", "object_ids", "read_frame", "read_split_file"]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
VOID_ID = 255


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


def read_split_file(path: Path) -> list[str]:
    """Sequence names, one a line (blank lines skipped).

    Raises:
        FileNotFoundError: no such file. ValueError: the file lists nothing.
    """
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: the split file is empty (expected one sequence name per line)")
    return names


@dataclass(frozen=True)
class DAVISVideo:
    """One DAVIS sequence: frame files, and the folder of its annotations."""

    name: str
    frame_paths: tuple[Path, ...]
    annotation_dir: Path

    def __len__(self) -> int:
        return len(self.frame_paths)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the first frame (all frames must share it)."""
        return frame_size(self.frame_paths[0])

    @property
    def first_annotation_path(self) -> Path:
        return self.annotation_dir / f"{self.frame_paths[0].stem}.png"

    def frames(self, start: int = 0) -> Iterator[np.ndarray]:
        """Frames from ``start`` on, read one at a time: (H, W, 3) uint8 RGB."""
        size = self.size
        for path in self.frame_paths[start:]:
            yield read_frame(path, size=size)

    def first_mask(self) -> np.ndarray:
        """(H, W) uint8 ids of the first frame's annotation.

        Raises:
            FileNotFoundError: the annotation is missing. ValueError: not a palette PNG, another
            size than the frame, or no object in it.
        """
        path = self.first_annotation_path
        if not path.is_file():
            raise FileNotFoundError(f"first-frame annotation not found: {path} (for frame {self.frame_paths[0]})")
        mask = read_indexed_png(path)
        size = self.size
        if mask.shape != size:
            raise ValueError(
                f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its frame {self.frame_paths[0]} is {size[1]}x{size[0]}"
            )
        if not object_ids(mask):
            raise ValueError(f"{path}: the first-frame annotation holds no object (only ids 0 and {VOID_ID})")
        return mask

    def validate_annotations(self, ids: Sequence[int] | None = None) -> None:
        """Check every annotation of the sequence against the first frame's.

        Raises:
            ValueError naming the file: not a palette PNG, another size than the frames, or ids
            that the first frame lacks.
        """
        ids = set(object_ids(self.first_mask()) if ids is None else ids) | {0, VOID_ID}
        size = self.size
        for path in sorted(self.annotation_dir.glob("*.png")):
            mask = read_indexed_png(path)
            if mask.shape != size:
                raise ValueError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, the frames are {size[1]}x{size[0]}")
            extra = sorted(set(np.unique(mask).tolist()) - ids)
            if extra:
                raise ValueError(
                    f"{path}: object ids {extra} are not in the first-frame annotation {self.first_annotation_path} "
                    f"(ids {sorted(ids - {0, VOID_ID})}); semi-supervised propagation only knows the first frame's objects"
                )


def object_ids(mask: np.ndarray) -> list[int]:
    """Sorted object ids of a mask (0 = background and 255 = void excluded)."""
    return [int(i) for i in np.unique(mask) if i not in (0, VOID_ID)]


class DAVISDataset(Sequence[DAVISVideo]):
    """The sequences of a DAVIS split. Folders are checked at construction; files are read lazily.

    Args:
        root: the DAVIS folder (holding ``JPEGImages``, ``Annotations``, ``ImageSets``).
        year: '2017' or '2016': which ``ImageSets/<year>/`` holds the split file.
        split: split file name without ``.txt`` (e.g. 'val'); ignored when ``sequences`` is given.
        resolution: '480p' or 'Full-Resolution'.
        sequences: explicit sequence names instead of a split file.

    Raises:
        FileNotFoundError: missing root, split file, frames or annotation folder (naming it).
        ValueError: empty split file.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        year: str = "2017",
        split: str = "val",
        resolution: str = "480p",
        sequences: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"DAVIS root not found: {self.root} (set data.root=... or CORRFLOW_DATA)")
        self.year, self.split, self.resolution = str(year), split, resolution
        if sequences is None:
            names = read_split_file(self.root / "ImageSets" / self.year / f"{split}.txt")
        else:
            names = [str(s) for s in ([sequences] if isinstance(sequences, str) else sequences)]
            if not names:
                raise ValueError("sequences=[] lists no sequence")
        self.videos = [self._video(name) for name in names]

    def _video(self, name: str) -> DAVISVideo:
        frames = list_frame_files(self.root / "JPEGImages" / self.resolution / name)
        ann = self.root / "Annotations" / self.resolution / name
        if not ann.is_dir():
            raise FileNotFoundError(f"annotation folder not found: {ann}")
        return DAVISVideo(name=name, frame_paths=tuple(frames), annotation_dir=ann)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.videos]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index):  # type: ignore[override]
        return self.videos[index]
