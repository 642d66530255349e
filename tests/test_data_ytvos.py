"""The YouTube-VOS reader on tiny generated data sets: layout, entries, asked frames, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corrflow.data.vos.ytvos import YTVOSDataset, read_meta
from corrflow.utils.io import write_indexed_png

SIZE = (32, 48)


def late_square_video(n_frames: int = 8, *, enter: int = 5, size=SIZE, seed: int = 0, ids=(1, 2)):
    """(T, H, W, 3) uint8 frames and (T, H, W) uint8 masks: object ``ids[0]`` (a red square) moves
    right from frame 0; object ``ids[1]`` (a white square) appears at frame ``enter`` and moves
    right below it. Two-colour background, light noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    frames = np.zeros((n_frames, h, w, 3), np.uint8)
    frames[:, : h // 2] = (40, 90, 160)
    frames[:, h // 2 :] = (90, 140, 60)
    masks = np.zeros((n_frames, h, w), np.uint8)
    for t in range(n_frames):
        x0 = 4 + 2 * t
        frames[t, 4:12, x0 : x0 + 8] = (250, 40, 40)
        masks[t, 4:12, x0 : x0 + 8] = ids[0]
        if t >= enter:
            x1 = 4 + 2 * (t - enter)
            frames[t, 16:24, x1 : x1 + 8] = (240, 240, 240)
            masks[t, 16:24, x1 : x1 + 8] = ids[1]
    noise = rng.integers(-6, 7, frames.shape)
    return np.clip(frames.astype(int) + noise, 0, 255).astype(np.uint8), masks


def make_ytvos_tree(
    root: Path,
    split: str = "valid",
    videos: dict[str, int] | None = None,
    *,
    enter: int = 3,
    ids=(1, 3),
    categories=("cat", "dog"),
    ground_truth: bool = False,
) -> Path:
    """A YouTube-VOS split: JPEGImages/<video>/%05d.jpg named every 5th frame (00000, 00005, ...),
    meta.json, and Annotations only on the frames where objects enter (``ground_truth``: on every frame,
    as the training split). Object ``ids[0]`` enters at frame 0, ``ids[1]`` at frame index ``enter``."""
    videos = videos or {"vid-a": 8, "vid-b": 6}
    meta = {"videos": {}}
    for i, (name, n) in enumerate(videos.items()):
        frames, masks = late_square_video(n, enter=enter, seed=i, ids=ids)
        names = [f"{5 * t:05d}" for t in range(n)]
        jpg, ann = root / split / "JPEGImages" / name, root / split / "Annotations" / name
        jpg.mkdir(parents=True, exist_ok=True)
        for t in range(n):
            Image.fromarray(frames[t]).save(jpg / f"{names[t]}.jpg", quality=95)
            if ground_truth:
                write_indexed_png(ann / f"{names[t]}.png", masks[t])
        if not ground_truth:
            write_indexed_png(ann / f"{names[0]}.png", np.where(masks[0] == ids[0], ids[0], 0))
            write_indexed_png(ann / f"{names[enter]}.png", np.where(masks[enter] == ids[1], ids[1], 0))
        meta["videos"][name] = {
            "objects": {
                str(ids[0]): {"category": categories[0], "frames": names},
                str(ids[1]): {"category": categories[1], "frames": names[enter:]},
            }
        }
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / split / "meta.json").write_text(json.dumps(meta))
    return root


def test_reader_entries_asked_frames_and_lazy_masks(tmp_path: Path) -> None:
    root = make_ytvos_tree(tmp_path / "ytvos")
    ds = YTVOSDataset(root, split="valid")
    assert ds.names == ["vid-a", "vid-b"]
    v = ds[0]
    assert len(v) == 8 and v.size == SIZE
    assert v.frame_names[:3] == ("00000", "00005", "00010")
    assert v.entries == {0: [1], 3: [3]}
    assert v.output_frames == list(range(8))
    assert v.given_frames == [0, 3]
    assert v.categories == {1: "cat", 3: "dog"}
    assert set(np.unique(v.mask(3)).tolist()) == {0, 3}
    v.validate_annotations()


def test_meta_naming_missing_frames_names_the_file_and_frame(tmp_path: Path) -> None:
    root = make_ytvos_tree(tmp_path / "ytvos")
    (root / "valid" / "JPEGImages" / "vid-a" / "00035.jpg").unlink()
    with pytest.raises(ValueError, match=r"meta\.json: video 'vid-a', object 1 names frame '00035'.*not in .*vid-a"):
        YTVOSDataset(root, split="valid")


def test_an_id_the_meta_file_lacks_names_the_file_and_frame(tmp_path: Path) -> None:
    root = make_ytvos_tree(tmp_path / "ytvos")
    path = root / "valid" / "Annotations" / "vid-b" / "00015.png"
    mask = np.zeros(SIZE, np.uint8)
    mask[16:24, 4:12] = 7
    write_indexed_png(path, mask)
    video = YTVOSDataset(root, split="valid")[1]
    with pytest.raises(ValueError, match=r"00015\.png: object ids \[7\] \(frame 00015 of video vid-b\) are not in .*meta\.json"):
        video.validate_annotations()


def test_an_empty_annotation_folder_is_named(tmp_path: Path) -> None:
    root = make_ytvos_tree(tmp_path / "ytvos")
    for p in (root / "valid" / "Annotations" / "vid-a").glob("*.png"):
        p.unlink()
    with pytest.raises(FileNotFoundError, match=r"Annotations/vid-a is missing or empty"):
        YTVOSDataset(root, split="valid")


def test_an_object_missing_from_its_first_mask_is_named(tmp_path: Path) -> None:
    root = make_ytvos_tree(tmp_path / "ytvos")
    write_indexed_png(root / "valid" / "Annotations" / "vid-a" / "00015.png", np.zeros(SIZE, np.uint8))
    with pytest.raises(ValueError, match=r"00015\.png: objects \[3\] enter at frame 00015 of video vid-a"):
        YTVOSDataset(root, split="valid")[0].validate_annotations()


def test_split_file_and_bad_meta(tmp_path: Path) -> None:
    root = make_ytvos_tree(tmp_path / "ytvos", "train", ground_truth=True)
    (root / "holdout.txt").write_text("vid-b\n")
    assert YTVOSDataset(root, split="train", split_file="holdout.txt").names == ["vid-b"]
    (root / "train" / "meta.json").write_text("{}")
    with pytest.raises(ValueError, match="not a YouTube-VOS meta file"):
        read_meta(root / "train" / "meta.json")
