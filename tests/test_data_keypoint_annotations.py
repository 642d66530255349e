"""Keypoint ground-truth readers: JHMDB joint_positions.mat, split files, generic JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from corrflow.data.keypoints.annotations import (
    load_jhmdb_joints,
    load_jhmdb_split,
    load_keypoints_json,
    read_jhmdb_split_file,
)
from tests.helpers.shared_data import shared_path, skip_if_missing

REAL_MAT = shared_path(
    "jhmdb-sample", "joint_positions", "catch", "Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2", "joint_positions.mat"
)


def _pos_img(t=3):
    """(2, 15, T) 1-based MATLAB coordinates: joint j at x = 11 + j + t, y = 21 + j."""
    pos = np.zeros((2, 15, t))
    for j in range(15):
        pos[0, j, :] = 11 + j + np.arange(t)
        pos[1, j, :] = 21 + j
    return pos


def _write_mat(path, **variables):
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), variables)
    return path


def test_jhmdb_joints_are_zero_based_and_transposed(tmp_path):
    mat = _write_mat(tmp_path / "joint_positions.mat", pos_img=_pos_img(3), pos_world=np.zeros((2, 15, 3)))
    coords, visible = load_jhmdb_joints(mat)
    assert coords.shape == (3, 15, 2) and coords.dtype == np.float32
    assert visible.shape == (3, 15) and visible.dtype == bool and visible.all()
    np.testing.assert_array_equal(coords[2, 4], [10 + 4 + 2, 20 + 4])


def test_jhmdb_visibility_follows_the_first_frame(tmp_path):
    pos = _pos_img(3)
    pos[0, 0, 0] = 400.0  # joint 0 outside the 320-wide frame in frame 0 only
    pos[1, 1, 2] = -5.0  # joint 1 outside in frame 2 only
    mat = _write_mat(tmp_path / "j.mat", pos_img=pos)
    _, visible = load_jhmdb_joints(mat)
    assert not visible[:, 0].any()  # dropped from every frame, as CRW does
    assert visible[:, 1].all()  # still scored after leaving the image
    _, per_frame = load_jhmdb_joints(mat, visibility="per_frame")
    assert per_frame[1:, 0].all() and not per_frame[0, 0]
    assert not per_frame[2, 1] and per_frame[:2, 1].all()
    _, everything = load_jhmdb_joints(mat, image_size=None)
    assert everything.all()


def test_jhmdb_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        load_jhmdb_joints(tmp_path / "missing.mat")
    no_pos = _write_mat(tmp_path / "no_pos.mat", pos_world=np.zeros((2, 15, 3)))
    with pytest.raises(ValueError, match="no_pos.mat.*pos_img"):
        load_jhmdb_joints(no_pos)
    bad_shape = _write_mat(tmp_path / "bad_shape.mat", pos_img=np.zeros((2, 14, 3)))
    with pytest.raises(ValueError, match="bad_shape.mat"):
        load_jhmdb_joints(bad_shape)
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(ValueError, match="garbage.mat"):
        load_jhmdb_joints(garbage)


@skip_if_missing(REAL_MAT, what="shared JHMDB sample")
def test_real_jhmdb_clip():
    coords, visible = load_jhmdb_joints(REAL_MAT)
    assert coords.shape == (40, 15, 2)
    np.testing.assert_allclose(coords[0, 0], [285.5, 105.5])  # pos_img (286.5, 106.5), 1-based
    assert visible.all()


def test_jhmdb_split_files_and_tree(tmp_path):
    root = tmp_path / "jhmdb"
    _write_mat(root / "joint_positions/catch/clip_a/joint_positions.mat", pos_img=_pos_img(2))
    _write_mat(root / "joint_positions/run/clip_b/joint_positions.mat", pos_img=_pos_img(2))
    (root / "Rename_Images/run/clip_b").mkdir(parents=True)
    Image.new("RGB", (20, 40)).save(root / "Rename_Images/run/clip_b/00001.png")  # W=20, H=40
    official = tmp_path / "catch_test_split1.txt"
    official.write_text("clip_a.avi 2\nclip_z.avi 1\n")
    assert read_jhmdb_split_file(official) == ["catch/clip_a"]
    listing = tmp_path / "list.txt"
    listing.write_text("catch/clip_a\n\nrun/clip_b extra\n")
    assert read_jhmdb_split_file(listing) == ["catch/clip_a", "run/clip_b"]
    ann = load_jhmdb_split(root, listing)
    assert list(ann) == ["catch/clip_a", "run/clip_b"]
    assert ann["catch/clip_a"][1].all()  # default 320x240 frame
    assert not ann["run/clip_b"][1][:, 10:].any()  # x = 10 + j >= 20 is outside the 20-px-wide frame
    assert ann["run/clip_b"][1][:, :10].all()
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty.txt"):
        read_jhmdb_split_file(empty)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_jhmdb_split_file(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("just_a_video\n")
    with pytest.raises(ValueError, match="bad.txt"):
        read_jhmdb_split_file(bad)


def _write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_keypoints_json_sparse_frames(tmp_path):
    data = {"sequences": {"s": {"2": [[1, 2, 1], [3, 4, 0]], "5": [[5.5, 6, True], [7, 8, 1]]}}}
    ann = load_keypoints_json(_write_json(tmp_path / "k.json", data))
    coords, visible = ann["s"]
    assert coords.shape == (6, 2, 2) and coords.dtype == np.float32
    assert visible.shape == (6, 2) and visible.dtype == bool
    np.testing.assert_array_equal(coords[5], [[5.5, 6], [7, 8]])
    np.testing.assert_array_equal(visible[2], [True, False])
    assert not visible[[0, 1, 3, 4]].any() and np.isnan(coords[0]).all()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"seqs": {}}), "'sequences'"),
        (json.dumps({"sequences": {}}), "empty"),
        (json.dumps({"sequences": {"s": {"x": [[1, 2, 1]]}}}), "not an integer"),
        (json.dumps({"sequences": {"s": {"0": [[1, 2]]}}}), r"\[x, y, visible\]"),
        (json.dumps({"sequences": {"s": {"0": [["a", 2, 1]]}}}), "numbers"),
        (json.dumps({"sequences": {"s": {"0": [[1, 2, 1]], "1": [[1, 2, 1], [3, 4, 1]]}}}), "different keypoint counts"),
        (json.dumps({"sequences": {"s": {"0": [[1, 2, 0]]}}}), "no keypoint is visible"),
    ],
)
def test_keypoints_json_errors_name_the_file(tmp_path, content, match):
    path = tmp_path / "bad_annotations.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        load_keypoints_json(path)
    assert "bad_annotations.json" in str(info.value)


def test_keypoints_json_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.json"):
        load_keypoints_json(tmp_path / "absent.json")
