"""YouTube-VOS (2018 and 2019) semi-supervised video object segmentation, for label propagation.

Layout::

    <root>/<split>/JPEGImages/<video>/00000.jpg ...    frames (every 5th frame of the video in the release)
    <root>/<split>/Annotations/<video>/00000.png ...   palette PNGs: in valid/test only on the frames where
                                                       objects are first given; in train on every frame
    <root>/<split>/meta.json                           {"videos": {"<video>": {"objects": {"<id>":
                                                         {"category": "<class>", "frames": ["00000", ...]}}}}}
    <root>/<split>_all_frames/JPEGImages/<video>/      optional: every frame (``all_frames=True``)

An object *enters* at the first frame ``meta.json`` lists for it: its mask is read from that
frame's annotation, where it must appear (only the entering ids of that file are taken; any
other id in it is not used, so training-split annotations give no more than valid's). The
predictions asked for are every frame that ``meta.json`` lists for any object of the video.
``category`` is optional (valid's meta may lack it); where given it sorts objects into seen and
unseen classes when scoring (:mod:`corrflow.evaluation.ytvos`).

Errors name the file and the frame: a ``meta.json`` that lists a frame the frames folder lacks,
an annotation id that ``meta.json`` lacks, an entering object missing from its first mask, an
empty annotation folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from corrflow.data.video.frame_files import AnnotatedFrameFiles, VideoSet, list_frame_files
from corrflow.data.vos.davis import object_ids
from corrflow.utils.io import read_indexed_png

__all__ = ["YTVOSDataset", "YTVOSObject", "YTVOSVideo", "read_meta"]


@dataclass(frozen=True)
class YTVOSObject:
    """One object of a video: its id (its pixel value), class (None where not given) and the
    frames ``meta.json`` lists for it (frame names, sorted)."""

    id: int
    category: str | None
    frames: tuple[str, ...]


def read_meta(path: Path) -> dict[str, list[YTVOSObject]]:
    """``{video: [objects, by id]}`` from a YouTube-VOS ``meta.json``.

    Raises:
        FileNotFoundError: no file. ValueError: not JSON, or not the YouTube-VOS form (naming the entry).
    """
    if not path.is_file():
        raise FileNotFoundError(f"YouTube-VOS meta file not found: {path}")
    try:
        data = json.loads(path.read_text())
        videos = data["videos"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a YouTube-VOS meta file ({{'videos': {{<video>: {{'objects': ...}}}}}}): {e}") from e
    out = {}
    for name, entry in videos.items():
        objects = []
        try:
            items = entry["objects"].items()
        except (KeyError, AttributeError, TypeError) as e:
            raise ValueError(f"{path}: video {name!r} has no 'objects' mapping") from e
        for oid, obj in items:
            try:
                i = int(oid)
                frames = tuple(sorted(str(f) for f in obj["frames"]))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}: video {name!r}, object {oid!r}: expected an integer id with a 'frames' list") from e
            if not 0 < i < 255:
                raise ValueError(f"{path}: video {name!r}: object id {i} must lie in 1..254")
            if not frames:
                raise ValueError(f"{path}: video {name!r}, object {i} lists no frame")
            objects.append(YTVOSObject(i, obj.get("category"), frames))
        out[str(name)] = sorted(objects, key=lambda o: o.id)
    return out


@dataclass(frozen=True)
class YTVOSVideo(AnnotatedFrameFiles):
    """One YouTube-VOS video: its frames, its annotation folder and its ``meta.json`` objects."""

    name: str
    frame_paths: tuple[Path, ...]
    annotation_dir: Path
    objects: tuple[YTVOSObject, ...]
    meta_path: Path
    single_object = False

    @cached_property
    def frame_names(self) -> tuple[str, ...]:
        """The frames' file stems (the names predictions are written under)."""
        return tuple(p.stem for p in self.frame_paths)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {n: t for t, n in enumerate(self.frame_names)}

    @cached_property
    def output_frames(self) -> list[int]:
        """Indices of the frames that ``meta.json`` asks predictions for (any object's frames)."""
        return sorted({self._index[f] for o in self.objects for f in o.frames})

    @cached_property
    def entries(self) -> dict[int, list[int]]:
        """``{frame index: [ids of the objects that enter there]}``, in frame order."""
        out: dict[int, list[int]] = {}
        for o in self.objects:
            out.setdefault(self._index[o.frames[0]], []).append(o.id)
        return dict(sorted(out.items()))

    @property
    def categories(self) -> dict[int, str | None]:
        return {o.id: o.category for o in self.objects}

    def mask(self, t: int) -> np.ndarray:
        """(H, W) uint8 ids of frame ``t``'s annotation.

        Raises:
            FileNotFoundError / ValueError naming the file and the frame.
        """
        path = self.annotation_path(t)
        if not path.is_file():
            raise FileNotFoundError(f"annotation not found: {path} (frame {self.frame_names[t]} of video {self.name})")
        mask = read_indexed_png(path)
        if mask.shape != self.size:
            raise ValueError(
                f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but frame {self.frame_names[t]} ({self.frame_paths[t]}) "
                f"is {self.size[1]}x{self.size[0]}"
            )
        return mask

    def first_mask(self) -> np.ndarray:
        """The mask of the first frame where objects enter."""
        return self.mask(next(iter(self.entries)))

    def validate_annotations(self, ids: Sequence[int] | None = None) -> None:
        """Check every annotation file against ``meta.json``: ids that it lacks, entering objects
        missing from their first mask, sizes.

        Raises:
            ValueError naming the file and the frame.
        """
        known = {o.id for o in self.objects}
        for t in self.given_frames:
            extra = sorted(set(object_ids(self.mask(t))) - known)
            if extra:
                raise ValueError(
                    f"{self.annotation_path(t)}: object ids {extra} (frame {self.frame_names[t]} of video {self.name}) "
                    f"are not in {self.meta_path} (its objects: {sorted(known)})"
                )
        for t, entering in self.entries.items():
            present = set(object_ids(self.mask(t)))
            missing = [i for i in entering if i not in present]
            if missing:
                raise ValueError(
                    f"{self.annotation_path(t)}: objects {missing} enter at frame {self.frame_names[t]} of video "
                    f"{self.name} by {self.meta_path}, but their mask is empty there"
                )


class YTVOSDataset(VideoSet[YTVOSVideo]):
    """The videos of a YouTube-VOS split. Folders and ``meta.json`` are checked at construction;
    frames and masks are read lazily.

    Args:
        root: the YouTube-VOS folder (holding ``train/``, ``valid/``, ...).
        split: the sub-folder, e.g. 'valid' or 'train'.
        sequences: explicit video names (default: every video of ``meta.json``, sorted).
        split_file: a file of video names, one a line (relative to ``root`` unless absolute),
            e.g. a held-out part of the training split that has ground truth on every listed frame.
        all_frames: read the frames from ``<split>_all_frames/JPEGImages/`` (every frame of the
            video; predictions are still written only for the frames ``meta.json`` asks for).

    Raises:
        FileNotFoundError: missing root, meta file, frames folder or an empty / missing annotation folder.
        ValueError: a video unknown to ``meta.json``, or ``meta.json`` naming a frame that does not exist.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split: str = "valid",
        sequences: Sequence[str] | None = None,
        split_file: str | None = None,
        all_frames: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"YouTube-VOS root not found: {self.root} (set data.root=... or CORRFLOW_DATA)")
        self.split, self.all_frames = split, bool(all_frames)
        self.split_dir = self.root / split
        self.meta_path = self.split_dir / "meta.json"
        meta = read_meta(self.meta_path)
        if sequences is not None:
            names = [str(s) for s in ([sequences] if isinstance(sequences, str) else sequences)]
        elif split_file:
            path = Path(split_file) if Path(split_file).is_absolute() else self.root / split_file
            if not path.is_file():
                raise FileNotFoundError(f"split file not found: {path}")
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        else:
            names = sorted(meta)
        if not names:
            raise ValueError(f"no videos selected from {self.meta_path}")
        unknown = [n for n in names if n not in meta]
        if unknown:
            raise ValueError(f"videos {unknown[:5]} are not in {self.meta_path}")
        frames_root = (self.root / f"{split}_all_frames" if self.all_frames else self.split_dir) / "JPEGImages"
        self.videos = [self._video(n, meta[n], frames_root) for n in names]

    def _video(self, name: str, objects: list[YTVOSObject], frames_root: Path) -> YTVOSVideo:
        frames = list_frame_files(frames_root / name)
        ann = self.split_dir / "Annotations" / name
        if not ann.is_dir() or not any(ann.glob("*.png")):
            raise FileNotFoundError(f"annotation folder {ann} is missing or empty (video {name} needs its objects' first masks)")
        if not objects:
            raise ValueError(f"{self.meta_path}: video {name!r} lists no object")
        stems = {p.stem for p in frames}
        for o in objects:
            missing = [f for f in o.frames if f not in stems]
            if missing:
                raise ValueError(
                    f"{self.meta_path}: video {name!r}, object {o.id} names frame {missing[0]!r}"
                    f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}, which is not in {frames_root / name}"
                )
        return YTVOSVideo(name, tuple(frames), ann, tuple(objects), self.meta_path)
