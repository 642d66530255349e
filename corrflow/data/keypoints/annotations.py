"""Ground-truth keypoint readers: JHMDB ``joint_positions.mat`` and a generic JSON format.

Both give, per sequence, ``coords`` (T, K, 2) float32 x, y in 0-based pixels of the frames as
stored, and ``visible`` (T, K) bool: the inputs of :mod:`corrflow.metrics.pck`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "JHMDB_FRAME_SIZE",
    "JHMDB_NUM_JOINTS",
    "load_jhmdb_joints",
    "load_jhmdb_split",
    "load_keypoints_json",
    "read_jhmdb_split_file",
]

JHMDB_NUM_JOINTS = 15
JHMDB_FRAME_SIZE = (240, 320)  # (H, W) of every JHMDB clip

Keypoints = tuple[np.ndarray, np.ndarray]  # coords (T, K, 2) float32, visible (T, K) bool


def load_jhmdb_joints(
    mat_path: str | os.PathLike,
    *,
    image_size: tuple[int, int] | None = JHMDB_FRAME_SIZE,
    visibility: Literal["first_frame", "per_frame"] = "first_frame",
) -> Keypoints:
    """Read the 15 joints of a JHMDB clip.

    ``pos_img`` in the file is (2, 15, T) of 1-based MATLAB x, y; we return 0-based pixels.
    Visibility follows the reference evaluation (CRW ``eval_pck.py``): a joint that lies outside
    the image in the first frame cannot be propagated and is dropped from every frame; joints
    that leave the image later are still scored (``visibility="first_frame"``, the default).
    ``"per_frame"`` instead marks each joint visible in the frames where it is inside the image.

    Args:
        mat_path: a ``joint_positions.mat``.
        image_size: (H, W) of the clip's frames; inside means ``0 <= x < W`` and ``0 <= y < H``
            (0-based). ``None``: every joint is visible.
        visibility: ``"first_frame"`` or ``"per_frame"``, as above.

    Returns:
        coords: (T, 15, 2) float32 0-based x, y; visible: (T, 15) bool.
    """
    from scipy.io import loadmat

    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise FileNotFoundError(f"JHMDB joint file not found: {mat_path}")
    if visibility not in ("first_frame", "per_frame"):
        raise ValueError(f"visibility must be 'first_frame' or 'per_frame', got {visibility!r}")
    try:
        mat = loadmat(str(mat_path))
    except Exception as e:  # scipy raises several types for corrupt files
        raise ValueError(f"{mat_path}: cannot read MATLAB file ({e})") from e
    if "pos_img" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{mat_path}: no 'pos_img' variable (found {keys})")
    pos = np.asarray(mat["pos_img"], dtype=np.float64)
    if pos.ndim == 2:  # a single-frame clip loses its last axis in MATLAB
        pos = pos[:, :, None]
    if pos.ndim != 3 or pos.shape[0] != 2 or pos.shape[1] != JHMDB_NUM_JOINTS or pos.shape[2] == 0:
        raise ValueError(f"{mat_path}: 'pos_img' must be (2, {JHMDB_NUM_JOINTS}, T>0), got {pos.shape}")
    coords = (pos.transpose(2, 1, 0) - 1.0).astype(np.float32)  # (T, 15, 2)
    if not np.all(np.isfinite(coords)):
        raise ValueError(f"{mat_path}: 'pos_img' holds non-finite coordinates")
    if image_size is None:
        visible = np.ones(coords.shape[:2], dtype=bool)
    else:
        height, width = image_size
        x, y = coords[..., 0], coords[..., 1]
        visible = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        if visibility == "first_frame":
            visible = np.broadcast_to(visible[:1], visible.shape).copy()
    return coords, visible


def read_jhmdb_split_file(split_file: str | os.PathLike) -> list[str]:
    """Clip names (``<action>/<video>``) listed in a split file.

    Two formats are read. The JHMDB release's ``<action>_test_split<k>.txt`` has lines
    ``<video>.avi <1|2>``; the action comes from the file name and only test clips (2) are kept.
    Otherwise each non-empty line's first token is ``<action>/<video>``.
    """
    split_file = Path(split_file)
    if not split_file.is_file():
        raise FileNotFoundError(f"JHMDB split file not found: {split_file}")
    lines = [ln.split() for ln in split_file.read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{split_file}: the split file lists no clip")
    clips = []
    for number, tokens in enumerate(lines, start=1):
        if tokens[0].endswith(".avi"):
            action, sep, _ = split_file.name.rpartition("_test_split")
            if not sep or len(tokens) < 2:
                raise ValueError(
                    f"{split_file}:{number}: '<video>.avi <1|2>' lines need a file named "
                    f"'<action>_test_split<k>.txt' and a train/test flag"
                )
            if tokens[1] == "2":
                clips.append(f"{action}/{tokens[0][: -len('.avi')]}")
        else:
            name = tokens[0].strip("/")
            if name.count("/") != 1:
                raise ValueError(f"{split_file}:{number}: expected '<action>/<video>', got {tokens[0]!r}")
            clips.append(name)
    if not clips:
        raise ValueError(f"{split_file}: the split file lists no test clip")
    return clips


def load_jhmdb_split(
    jhmdb_root: str | os.PathLike,
    split_file: str | os.PathLike,
    *,
    visibility: Literal["first_frame", "per_frame"] = "first_frame",
) -> dict[str, Keypoints]:
    """Joints of every clip of a split, keyed ``<action>/<video>``.

    Reads ``<root>/joint_positions/<action>/<video>/joint_positions.mat``; the frame size comes
    from ``<root>/Rename_Images/<action>/<video>/00001.png`` when present (else 240x320).
    """
    from PIL import Image

    root = Path(jhmdb_root)
    if not root.is_dir():
        raise FileNotFoundError(f"JHMDB root not found: {root}")
    out = {}
    for clip in read_jhmdb_split_file(split_file):
        first_frame = root / "Rename_Images" / clip / "00001.png"
        size = JHMDB_FRAME_SIZE
        if first_frame.is_file():
            with Image.open(first_frame) as im:
                size = (im.height, im.width)
        mat = root / "joint_positions" / clip / "joint_positions.mat"
        out[clip] = load_jhmdb_joints(mat, image_size=size, visibility=visibility)
    return out


def _parse_point(path: Path, where: str, point) -> tuple[float, float, bool]:
    if not isinstance(point, (list, tuple)) or len(point) != 3:
        raise ValueError(f"{path}: {where}: each keypoint must be [x, y, visible], got {point!r}")
    x, y, v = point
    if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in (x, y)):
        raise ValueError(f"{path}: {where}: x and y must be numbers, got {point!r}")
    if not isinstance(v, (bool, int, float)):
        raise ValueError(f"{path}: {where}: visible must be 0/1 or true/false, got {point!r}")
    return float(x), float(y), bool(v)


def load_keypoints_json(path: str | os.PathLike) -> dict[str, Keypoints]:
    """Read keypoint annotations in the generic JSON format.

    Format: ``{"sequences": {"<seq>": {"<frame index>": [[x, y, visible], ...], ...}}}``, with x, y
    in 0-based pixels and the same number K of keypoints in every annotated frame. Frame indices
    are 0-based positions in the video; the first annotated frame is the query. Frames that are
    not annotated come back invisible with NaN coordinates.

    Returns:
        ``{seq: (coords (T, K, 2) float32, visible (T, K) bool)}`` with T = last annotated index + 1.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"keypoint annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("sequences"), dict):
        raise ValueError(f"{path}: expected an object with a 'sequences' object")
    if not data["sequences"]:
        raise ValueError(f"{path}: 'sequences' is empty")
    out = {}
    for seq, frames in data["sequences"].items():
        if not isinstance(frames, dict) or not frames:
            raise ValueError(f"{path}: sequence {seq!r}: expected a non-empty object of frame index -> keypoints")
        parsed = {}
        for key, points in frames.items():
            try:
                index = int(key)
            except ValueError:
                raise ValueError(f"{path}: sequence {seq!r}: frame key {key!r} is not an integer") from None
            if index < 0:
                raise ValueError(f"{path}: sequence {seq!r}: negative frame index {index}")
            if index in parsed:
                raise ValueError(f"{path}: sequence {seq!r}: frame {index} given twice")
            if not isinstance(points, list) or not points:
                raise ValueError(f"{path}: sequence {seq!r} frame {key}: expected a non-empty list of keypoints")
            parsed[index] = [_parse_point(path, f"sequence {seq!r} frame {key}", p) for p in points]
        counts = {len(p) for p in parsed.values()}
        if len(counts) != 1:
            raise ValueError(f"{path}: sequence {seq!r}: frames have different keypoint counts {sorted(counts)}")
        n_frames, n_points = max(parsed) + 1, counts.pop()
        coords = np.full((n_frames, n_points, 2), np.nan, dtype=np.float32)
        visible = np.zeros((n_frames, n_points), dtype=bool)
        for index, points in parsed.items():
            arr = np.asarray(points, dtype=np.float64)
            coords[index] = arr[:, :2]
            visible[index] = arr[:, 2] != 0
        if not visible.any():
            raise ValueError(f"{path}: sequence {seq!r}: no keypoint is visible in any frame")
        out[str(seq)] = (coords, visible)
    return out
