"""JHMDB keypoint propagation data, in the release layout::

    <root>/Rename_Images/<action>/<video>/00001.png ...
    <root>/joint_positions/<action>/<video>/joint_positions.mat     pos_img (2, 15, T), 1-based

Clips are named ``<action>/<video>``; the list comes from a split file (``<action>/<video>``
lines, or the release's ``<action>_test_split<k>.txt``) or, without one, every clip on disk.
The joints are read by :func:`corrflow.data.keypoints.annotations.load_jhmdb_joints`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from corrflow.data.keypoints.videos import KeypointVideo, KeypointVideoSet, query_frame
from corrflow.data.video.frame_files import frame_size, list_frame_files

__all__ = ["JHMDBDataset"]

log = logging.getLogger(__name__)

FRAMES_DIR = "Rename_Images"
JOINTS_DIR = "joint_positions"
JOINTS_FILE = "joint_positions.mat"


class JHMDBDataset(KeypointVideoSet):
    """JHMDB clips with their 15 joints; frame 0 is the query.

    Args:
        root: the JHMDB folder.
        split_file: list of clips (relative paths are taken from ``root``); None: every clip.
        sequences: explicit ``<action>/<video>`` names instead (overrides ``split_file``).
        visibility: 'first_frame' (CRW's rule) or 'per_frame'; see ``load_jhmdb_joints``.

    Raises:
        FileNotFoundError / ValueError naming the file: missing root, frames or joint file,
        empty split file, more annotated frames than images.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split_file: str | os.PathLike | None = None,
        sequences: Sequence[str] | None = None,
        visibility: str = "first_frame",
    ) -> None:
        from corrflow.data.keypoints.annotations import load_jhmdb_joints, read_jhmdb_split_file

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"JHMDB root not found: {self.root} (set data.root=... or CORRFLOW_DATA)")
        if sequences is not None:
            names = [str(s).strip("/") for s in ([sequences] if isinstance(sequences, str) else sequences)]
        elif split_file is not None:
            path = Path(split_file)
            names = read_jhmdb_split_file(path if path.is_absolute() else self.root / path)
        else:
            frames_root = self.root / FRAMES_DIR
            if not frames_root.is_dir():
                raise FileNotFoundError(f"JHMDB frames folder not found: {frames_root}")
            names = sorted(f"{a.name}/{v.name}" for a in frames_root.iterdir() if a.is_dir() for v in a.iterdir() if v.is_dir())
            if not names:
                raise FileNotFoundError(f"{frames_root}: no <action>/<video> clip folders")
        self.videos = []
        for name in names:
            frames = list_frame_files(self.root / FRAMES_DIR / name)
            mat = self.root / JOINTS_DIR / name / JOINTS_FILE
            coords, visible = load_jhmdb_joints(mat, image_size=frame_size(frames[0]), visibility=visibility)
            if coords.shape[0] > len(frames):
                raise ValueError(f"{mat}: joints for {coords.shape[0]} frames but {frames[0].parent} has {len(frames)} images")
            if coords.shape[0] < len(frames):
                log.warning("%s: joints for %d of %d frames; propagating the annotated ones", mat, coords.shape[0], len(frames))
                frames = frames[: coords.shape[0]]
            q = query_frame(visible, source=str(mat))
            self.videos.append(KeypointVideo(name, tuple(frames), coords, visible, q))
