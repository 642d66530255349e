"""Videos with keypoints: the record every keypoint dataset yields, and a dataset of DAVIS-layout
frame folders with keypoints in a JSON file.

JSON format (read by :func:`corrflow.data.keypoints.annotations.load_keypoints_json`)::

    {"sequences": {"<seq>": {"<frame index>": [[x, y, visible], ...], ...}}}

x, y in 0-based pixels. The first frame with a visible keypoint is the query: its keypoints
are propagated; the later annotated frames are what scoring compares with.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corrflow.data.video.frame_files import FrameFiles, VideoSet, list_frame_files

__all__ = ["KeypointVideo", "KeypointVideoDataset", "KeypointVideoSet", "query_frame", "query_frame_index"]


@dataclass(frozen=True, eq=False)
class KeypointVideo(FrameFiles):
    """One video and its keypoints.

    Attributes:
        name: sequence name (may hold '/', e.g. JHMDB's ``<action>/<video>``).
        frame_paths: the frames, in order.
        coords: (T, K, 2) float32 x, y in pixels (NaN where not annotated).
        visible: (T, K) bool.
        query_index: the frame whose keypoints are propagated.
    """

    name: str
    frame_paths: tuple[Path, ...]
    coords: np.ndarray
    visible: np.ndarray
    query_index: int

    @property
    def num_keypoints(self) -> int:
        return int(self.coords.shape[1])

    def query(self) -> tuple[np.ndarray, np.ndarray]:
        """The query frame's keypoints: coords (K, 2), visible (K,)."""
        return self.coords[self.query_index], self.visible[self.query_index]



def query_frame_index(visible: np.ndarray) -> int:
    """Index of the query frame: the first frame with any visible keypoint.

    Args:
        visible: (T, K) bool.
    """
    visible = np.asarray(visible, dtype=bool)
    frames = np.flatnonzero(visible.any(axis=1))
    if frames.size == 0:
        raise ValueError("no keypoint is visible in any frame")
    return int(frames[0])


def query_frame(visible: np.ndarray, *, source: str) -> int:
    """First frame with a visible keypoint: the scorer's rule, with ``source`` named in the error."""
    try:
        return query_frame_index(visible)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e


class KeypointVideoSet(VideoSet[KeypointVideo]):
    """A list of :class:`KeypointVideo` (``self.videos``), with the annotations that score them."""

    videos: list[KeypointVideo]

    def annotations(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{seq: (coords (T, K, 2), visible (T, K))}`` for scoring."""
        return {v.name: (v.coords, v.visible) for v in self.videos}


class KeypointVideoDataset(KeypointVideoSet):
    """DAVIS-layout frames (``<root>/JPEGImages/<resolution>/<seq>/``) with keypoints from a JSON file.

    Args:
        root: folder holding ``JPEGImages``.
        annotations: the JSON file (relative paths are taken from ``root``).
        resolution: ``JPEGImages`` sub-folder.
        sequences: which annotated sequences to use (default: all in the file).

    Raises:
        FileNotFoundError / ValueError naming the file: missing or malformed JSON, missing frames,
        a sequence annotated beyond its last frame.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        annotations: str | os.PathLike,
        resolution: str = "480p",
        sequences: Sequence[str] | None = None,
    ) -> None:
        from corrflow.data.keypoints.annotations import load_keypoints_json

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"keypoint video root not found: {self.root} (set data.root=...)")
        path = Path(annotations)
        self.annotation_file = path if path.is_absolute() else self.root / path
        labels = load_keypoints_json(self.annotation_file)
        names = list(labels) if sequences is None else [str(s) for s in sequences]
        missing = [n for n in names if n not in labels]
        if missing:
            raise ValueError(f"{self.annotation_file}: no keypoints for sequences {missing}")
        self.videos = []
        for name in names:
            frames = list_frame_files(self.root / "JPEGImages" / resolution / name)
            coords, visible = labels[name]
            if coords.shape[0] > len(frames):
                raise ValueError(
                    f"{self.annotation_file}: sequence {name!r} is annotated up to frame {coords.shape[0] - 1} "
                    f"but {frames[0].parent} has {len(frames)} frames"
                )
            q = query_frame(visible, source=f"{self.annotation_file} sequence {name!r}")
            self.videos.append(KeypointVideo(name, tuple(frames), coords, visible, q))
