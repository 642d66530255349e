"""KeypointVideoDataset: DAVIS-layout frames with keypoints in a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corrflow.data.keypoints.videos import KeypointVideoDataset
from tests.test_data_jhmdb import block_texture_video

SIZE = (24, 32)


def make_keypoint_tree(root: Path, *, n_frames: int = 5, query: int = 1) -> Path:
    """JPEGImages/480p/dots/%05d.png and keypoints.json: 3 points annotated from frame ``query``
    (the middle one invisible there), moving right one pixel a frame."""
    folder = root / "JPEGImages" / "480p" / "dots"
    folder.mkdir(parents=True)
    for t, frame in enumerate(block_texture_video(n_frames, SIZE)):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    pts = lambda t, v: [[6.0 + t, 5.0, 1], [12.0 + t, 10.0, v], [20.0 + t, 15.0, 1]]  # noqa: E731
    frames = {str(t): pts(t, 0 if t == query else 1) for t in range(query, n_frames)}
    (root / "keypoints.json").write_text(json.dumps({"sequences": {"dots": frames}}))
    return root


def test_query_is_the_first_annotated_frame(tmp_path: Path) -> None:
    root = make_keypoint_tree(tmp_path / "kp")
    ds = KeypointVideoDataset(root, annotations="keypoints.json")
    video = ds[0]
    assert ds.names == ["dots"] and len(video) == 5 and video.query_index == 1
    coords, visible = video.query()
    np.testing.assert_allclose(coords[0], [7.0, 5.0])
    assert visible.tolist() == [True, False, True]
    ann_coords, ann_visible = ds.annotations()["dots"]
    assert ann_coords.shape == (5, 3, 2) and not ann_visible[0].any()


def test_unknown_sequence_and_missing_file(tmp_path: Path) -> None:
    root = make_keypoint_tree(tmp_path / "kp")
    with pytest.raises(ValueError, match=r"keypoints\.json: no keypoints for sequences \['other'\]"):
        KeypointVideoDataset(root, annotations="keypoints.json", sequences=["other"])
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        KeypointVideoDataset(root, annotations="missing.json")


def test_annotations_beyond_the_last_frame(tmp_path: Path) -> None:
    root = make_keypoint_tree(tmp_path / "kp")
    (root / "JPEGImages" / "480p" / "dots" / "00004.png").unlink()
    with pytest.raises(ValueError, match=r"keypoints\.json: sequence 'dots' is annotated up to frame 4 .* has 4 frames"):
        KeypointVideoDataset(root, annotations="keypoints.json")
