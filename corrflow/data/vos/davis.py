"""DAVIS semi-supervised video object segmentation, for label propagation.

Layout::

    <root>/JPEGImages/<resolution>/<seq>/00000.jpg ...
    <root>/Annotations/<resolution>/<seq>/00000.png ...   one id map per frame
    <root>/ImageSets/<year>/<split>.txt                   DAVIS-2017 folders: one sequence name per line
    <root>/ImageSets/<resolution>/<split>.txt             the DAVIS-2016 release: one line per frame,
                                                          "/JPEGImages/480p/<seq>/00000.jpg /Annotations/480p/<seq>/00000.png"

The split file is looked up in that order (see :func:`find_split_file`); both line forms are read.

What a mask's pixel values mean is a dataset option, ``single_object``, not a guess from the files:

* ``single_object=False`` (DAVIS-2017, ``task=davis``): palette PNGs, 0 background, 1..N the
  objects, 255 void (ignored).
* ``single_object=True`` (DAVIS-2016, ``task=davis2016``): one object per video, and **any
  non-zero pixel is the object**, as the official DAVIS-2016 evaluation reads masks. This reads the
  2016 release (8-bit grayscale PNGs, object = 255) and the DAVIS-2017 folder with the 2016 split
  (palette PNGs, where the union of the ids is the 2016 object) alike; masks come out as 0/1.

Propagation reads the frames lazily, one at a time, and only the first frame's annotation;
:meth:`DAVISVideo.validate_annotations` checks the others (before scoring, not needed to propagate).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from corrflow.data.video.frame_files import AnnotatedFrameFiles, VideoSet, list_frame_files
from corrflow.utils.io import read_indexed_png

__all__ = [
    "DAVISDataset",
    "DAVISVideo",
    "find_split_file",
    "object_ids",
    "read_split_file",
]

VOID_ID = 255


def read_split_file(path: Path) -> list[str]:
    """Sequence names of a split file, in order, each once (blank lines skipped).

    A line is either a sequence name (DAVIS-2017's ``ImageSets/<year>/<split>.txt``) or a frame
    and its annotation, ``/JPEGImages/480p/<seq>/00000.jpg /Annotations/480p/<seq>/00000.png``
    (the DAVIS-2016 release's ``ImageSets/<resolution>/<split>.txt``): the sequence is the frame's folder.

    Raises:
        FileNotFoundError: no such file. ValueError: the file lists nothing, or a line is neither form.
    """
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    names: dict[str, None] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 1 and "/" not in fields[0]:
            name = fields[0]
        elif "/" in fields[0] and PurePosixPath(fields[0]).parent.name:
            name = PurePosixPath(fields[0]).parent.name
        else:
            raise ValueError(
                f"{path}, line {number}: expected a sequence name or '<frame path> <annotation path>', got {line.strip()!r}"
            )
        names[name] = None
    if not names:
        raise ValueError(f"{path}: the split file is empty (expected one sequence name per line)")
    return list(names)


def find_split_file(root: Path, *, year: str, split: str, resolution: str) -> Path:
    """``<root>/ImageSets/<year>/<split>.txt`` (DAVIS-2017 folders, the 2016 split included), else
    ``<root>/ImageSets/<resolution>/<split>.txt`` (the DAVIS-2016 release).

    Raises:
        FileNotFoundError: neither exists (both are named).
    """
    candidates = [root / "ImageSets" / str(year) / f"{split}.txt", root / "ImageSets" / resolution / f"{split}.txt"]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"split file not found: {candidates[0]} (nor {candidates[1]}, the DAVIS-2016 release's)")


@dataclass(frozen=True)
class DAVISVideo(AnnotatedFrameFiles):
    """One DAVIS sequence: frame files, the folder of its annotations, and how to read them
    (``single_object``: any non-zero pixel is the one object, id 1; see the module docstring)."""

    name: str
    frame_paths: tuple[Path, ...]
    annotation_dir: Path
    single_object: bool = False

    @property
    def first_annotation_path(self) -> Path:
        return self.annotation_dir / f"{self.frame_paths[0].stem}.png"

    def mask(self, t: int) -> np.ndarray:
        """(H, W) uint8 ids of frame ``t``'s annotation (0/1 with ``single_object``; may hold no object).

        Raises:
            FileNotFoundError: no annotation for that frame. ValueError: not a palette or
            grayscale PNG, or another size than the frame (both naming the file and the frame).
        """
        path = self.annotation_path(t)
        if not path.is_file():
            raise FileNotFoundError(f"annotation not found: {path} (for frame {t}, {self.frame_paths[t]})")
        mask = read_indexed_png(path)
        size = self.size
        if mask.shape != size:
            raise ValueError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its frame {t} ({self.frame_paths[t]}) is {size[1]}x{size[0]}")
        return (mask != 0).astype(np.uint8) if self.single_object else mask

    def first_mask(self) -> np.ndarray:
        """(H, W) uint8 ids of the first frame's annotation (0/1 with ``single_object``).

        Raises:
            FileNotFoundError: the annotation is missing. ValueError: not a palette or grayscale
            PNG, another size than the frame, or no object in it.
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
        if self.single_object:
            if not mask.any():
                raise ValueError(f"{path}: the first-frame annotation holds no object (every pixel is 0)")
            return (mask != 0).astype(np.uint8)
        if not object_ids(mask):
            hint = ""
            if (mask == VOID_ID).any():
                hint = (
                    f"; {VOID_ID} is void in DAVIS-2017 masks, but the object in the DAVIS-2016 release's "
                    f"grayscale masks: for those use task=davis2016 (task.dataset.single_object=true)"
                )
            raise ValueError(f"{path}: the first-frame annotation holds no object (only ids 0 and {VOID_ID}){hint}")
        return mask

    def validate_annotations(self, ids: Sequence[int] | None = None) -> None:
        """Check every annotation of the sequence against the first frame's.

        Raises:
            ValueError naming the file: not a palette or grayscale PNG, another size than the
            frames, or ids that the first frame lacks (not checked with ``single_object``, where
            every non-zero id is the object).
        """
        ids = set(object_ids(self.first_mask()) if ids is None else ids) | {0, VOID_ID}
        size = self.size
        for path in sorted(self.annotation_dir.glob("*.png")):
            mask = read_indexed_png(path)
            if mask.shape != size:
                raise ValueError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, the frames are {size[1]}x{size[0]}")
            if self.single_object:
                continue
            extra = sorted(set(np.unique(mask).tolist()) - ids)
            if extra:
                raise ValueError(
                    f"{path}: object ids {extra} are not in the first-frame annotation {self.first_annotation_path} "
                    f"(ids {sorted(ids - {0, VOID_ID})}); semi-supervised propagation only knows the first frame's objects"
                )


def object_ids(mask: np.ndarray) -> list[int]:
    """Sorted object ids of a mask (0 = background and 255 = void excluded)."""
    return [int(i) for i in np.unique(mask) if i not in (0, VOID_ID)]


class DAVISDataset(VideoSet[DAVISVideo]):
    """The sequences of a DAVIS split. Folders are checked at construction; files are read lazily.

    Args:
        root: the DAVIS folder (holding ``JPEGImages``, ``Annotations``, ``ImageSets``).
        year: '2017' or '2016': which ``ImageSets/<year>/`` holds the split file (else
            ``ImageSets/<resolution>/``, the DAVIS-2016 release's; see :func:`find_split_file`).
        split: split file name without ``.txt`` (e.g. 'val'); ignored when ``sequences`` is given.
        resolution: '480p', '1080p' (DAVIS-2016) or 'Full-Resolution' (DAVIS-2017).
        sequences: explicit sequence names instead of a split file.
        single_object: the DAVIS-2016 rule, any non-zero pixel is the one object (for the 2016
            release's grayscale 0/255 masks, and the 2016 split of a DAVIS-2017 folder); False:
            the DAVIS-2017 rule, ids 1..N are the objects and 255 is void.

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
        single_object: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"DAVIS root not found: {self.root} (set data.root=... or CORRFLOW_DATA)")
        self.year, self.split, self.resolution = str(year), split, resolution
        self.single_object = bool(single_object)
        if sequences is None:
            names = read_split_file(find_split_file(self.root, year=self.year, split=split, resolution=resolution))
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
        return DAVISVideo(name=name, frame_paths=tuple(frames), annotation_dir=ann, single_object=self.single_object)
