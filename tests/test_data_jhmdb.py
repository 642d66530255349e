"""JHMDBDataset: the release layout, split files, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from corrflow.data.keypoints.jhmdb import JHMDBDataset

SIZE = (24, 32)  # (H, W)


def block_texture_video(n_frames: int, size: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: random colours in 4x4 blocks, the picture moving right one pixel a frame."""
    h, w = size
    rng = np.random.default_rng(seed)
    wide = w + n_frames
    texture = rng.integers(0, 256, (-(-h // 4), -(-wide // 4), 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)[:h, :wide]
    return np.stack([texture[:, n_frames - t : n_frames - t + w] for t in range(n_frames)])


def make_jhmdb_tree(root: Path, clips: dict[str, int] | None = None, *, size: tuple[int, int] = SIZE) -> Path:
    """Rename_Images/<action>/<video>/%05d.png (from 00001) and joint_positions.mat with 15 joints
    on a grid that moves right one pixel a frame (1-based, as the release)."""
    clips = clips or {"catch/clip_a": 5, "run/clip_b": 4}
    h, w = size
    for i, (name, n) in enumerate(clips.items()):
        folder = root / "Rename_Images" / name
        folder.mkdir(parents=True)
        for t, frame in enumerate(block_texture_video(n, size, seed=i)):
            Image.fromarray(frame).save(folder / f"{t + 1:05d}.png")
        gx, gy = np.meshgrid(np.arange(5) * 4 + 4, np.arange(3) * 5 + 4)
        base = np.stack([gx.ravel(), gy.ravel()]).astype(float)  # (2, 15), 0-based
        pos = np.stack([base + np.array([[t], [0]]) for t in range(n)], axis=-1) + 1.0  # (2, 15, T), 1-based
        mat = root / "joint_positions" / name / "joint_positions.mat"
        mat.parent.mkdir(parents=True)
        savemat(mat, {"pos_img": pos})
    return root


def test_all_clips_without_a_split_file(tmp_path: Path) -> None:
    root = make_jhmdb_tree(tmp_path / "JHMDB")
    ds = JHMDBDataset(root)
    assert ds.names == ["catch/clip_a", "run/clip_b"]
    video = ds[0]
    assert len(video) == 5 and video.size == SIZE and video.query_index == 0
    coords, visible = video.query()
    assert coords.shape == (15, 2) and visible.all()
    np.testing.assert_allclose(coords[0], [4.0, 4.0])  # 1-based in the file, 0-based here
    ann = ds.annotations()
    assert set(ann) == set(ds.names) and ann["run/clip_b"][0].shape == (4, 15, 2)
    assert next(video.frames()).shape == (*SIZE, 3)


def test_split_file(tmp_path: Path) -> None:
    root = make_jhmdb_tree(tmp_path / "JHMDB")
    (root / "test.txt").write_text("run/clip_b\n")
    assert JHMDBDataset(root, split_file="test.txt").names == ["run/clip_b"]
    (root / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"empty\.txt"):
        JHMDBDataset(root, split_file="empty.txt")


def test_missing_joint_file(tmp_path: Path) -> None:
    root = make_jhmdb_tree(tmp_path / "JHMDB")
    (root / "joint_positions" / "run" / "clip_b" / "joint_positions.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"run/clip_b/joint_positions\.mat"):
        JHMDBDataset(root)


def test_missing_frames(tmp_path: Path) -> None:
    root = make_jhmdb_tree(tmp_path / "JHMDB")
    with pytest.raises(FileNotFoundError, match=r"Rename_Images/run/nope"):
        JHMDBDataset(root, sequences=["run/nope"])


def test_more_joints_than_frames(tmp_path: Path) -> None:
    root = make_jhmdb_tree(tmp_path / "JHMDB")
    (root / "Rename_Images" / "catch" / "clip_a" / "00005.png").unlink()
    with pytest.raises(ValueError, match=r"catch/clip_a/joint_positions\.mat: joints for 5 frames but .* has 4 images"):
        JHMDBDataset(root)
