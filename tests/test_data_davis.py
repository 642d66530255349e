"""DAVISDataset: layout, lazy frames, first-frame mask, and the errors that name the bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corrflow.data.vos.davis import DAVISDataset, find_split_file, read_split_file
from corrflow.utils.io import write_indexed_png

SIZE = (32, 48)  # (H, W)


def square_video(n_frames: int = 6, size: tuple[int, int] = SIZE, *, n_objects: int = 2, seed: int = 0):
    """(T, H, W, 3) uint8 frames and (T, H, W) uint8 masks: coloured squares moving right
    (object k+1 one row-band lower than object k) over a two-colour background."""
    rng = np.random.default_rng(seed)
    h, w = size
    frames = np.zeros((n_frames, h, w, 3), np.uint8)
    frames[:, : h // 2] = (40, 90, 160)
    frames[:, h // 2 :] = (90, 140, 60)
    masks = np.zeros((n_frames, h, w), np.uint8)
    colours = [(250, 40, 40), (250, 230, 40), (240, 240, 240)]
    s = 8
    for t in range(n_frames):
        for k in range(n_objects):
            x0, y0 = 4 + 2 * t + 12 * k, 4 + 14 * k
            frames[t, y0 : y0 + s, x0 : x0 + s] = colours[k]
            masks[t, y0 : y0 + s, x0 : x0 + s] = k + 1
    noise = rng.integers(-6, 7, frames.shape)
    return np.clip(frames.astype(int) + noise, 0, 255).astype(np.uint8), masks


def make_davis_tree(
    root: Path,
    sequences: dict[str, int] | None = None,
    *,
    year: str = "2017",
    split: str = "val",
    n_objects: int = 2,
    size: tuple[int, int] = SIZE,
    layout: str = "2017",
) -> Path:
    """A DAVIS tree: JPEGImages/480p/<seq>/%05d.png frames (lossless) and annotations on every frame.

    ``layout='2017'``: palette annotations (ids 1..N), ImageSets/<year>/<split>.txt of sequence names.
    ``layout='2016-release'``: the official DAVIS-2016 release, 8-bit grayscale annotations with
    every object at 255, and ImageSets/480p/<split>.txt with one '<frame> <annotation>' line a frame.
    """
    if layout not in ("2017", "2016-release"):
        raise ValueError(f"layout must be '2017' or '2016-release', got {layout!r}")
    sequences = sequences or {"squares-a": 6, "squares-b": 5}
    pairs = []
    for i, (name, n) in enumerate(sequences.items()):
        frames, masks = square_video(n, size, n_objects=n_objects, seed=i)
        for t in range(n):
            img_dir = root / "JPEGImages" / "480p" / name
            img_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frames[t]).save(img_dir / f"{t:05d}.png")
            ann = root / "Annotations" / "480p" / name / f"{t:05d}.png"
            if layout == "2017":
                write_indexed_png(ann, masks[t])
            else:
                ann.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.where(masks[t] > 0, 255, 0).astype(np.uint8)).save(ann)
                pairs.append(f"/JPEGImages/480p/{name}/{t:05d}.png /Annotations/480p/{name}/{t:05d}.png")
    sets = root / "ImageSets" / (year if layout == "2017" else "480p")
    sets.mkdir(parents=True, exist_ok=True)
    (sets / f"{split}.txt").write_text("\n".join(sequences if layout == "2017" else pairs) + "\n")
    return root


def test_dataset_lists_split_and_reads_lazily(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "DAVIS")
    ds = DAVISDataset(root, year="2017", split="val")
    assert ds.names == ["squares-a", "squares-b"]
    video = ds[0]
    assert len(video) == 6 and video.size == SIZE
    frames = video.frames(start=2)
    first = next(frames)
    assert first.shape == (*SIZE, 3) and first.dtype == np.uint8
    assert len(list(frames)) == 3
    mask = video.first_mask()
    assert mask.shape == SIZE and sorted(np.unique(mask).tolist()) == [0, 1, 2]
    video.validate_annotations()


def test_explicit_sequences_need_no_split_file(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "DAVIS")
    (root / "ImageSets" / "2017" / "val.txt").unlink()
    ds = DAVISDataset(root, sequences=["squares-b"])
    assert ds.names == ["squares-b"] and len(ds[0]) == 5


def test_missing_split_file(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "DAVIS")
    with pytest.raises(FileNotFoundError, match=r"ImageSets/2016/val\.txt"):
        DAVISDataset(root, year="2016", split="val")


def test_empty_split_file(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "DAVIS")
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"val\.txt: the split file is empty"):
        DAVISDataset(root, split="val")


def test_missing_frames(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "DAVIS")
    with pytest.raises(FileNotFoundError, match=r"JPEGImages/480p/nope"):
        DAVISDataset(root, sequences=["nope"])
    empty = root / "JPEGImages" / "480p" / "empty"
    empty.mkdir()
    (root / "Annotations" / "480p" / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"480p/empty: no frames"):
        DAVISDataset(root, sequences=["empty"])


def test_missing_annotations(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "DAVIS")
    (root / "Annotations" / "480p" / "squares-a" / "00000.png").unlink()
    video = DAVISDataset(root, sequences=["squares-a"])[0]
    with pytest.raises(FileNotFoundError, match=r"squares-a/00000\.png"):
        video.first_mask()


def test_mask_of_another_size(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "DAVIS")
    bad = root / "Annotations" / "480p" / "squares-a" / "00000.png"
    write_indexed_png(bad, np.ones((16, 48), np.uint8))
    video = DAVISDataset(root, sequences=["squares-a"])[0]
    with pytest.raises(ValueError, match=r"squares-a/00000\.png: mask is 48x16 but its frame .* is 48x32"):
        video.first_mask()


def test_non_palette_mask(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "DAVIS")
    bad = root / "Annotations" / "480p" / "squares-a" / "00000.png"
    Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(bad)
    video = DAVISDataset(root, sequences=["squares-a"])[0]
    with pytest.raises(ValueError, match=r"squares-a/00000\.png: expected a palette"):
        video.first_mask()


def test_ids_in_later_frames_that_the_first_frame_lacks(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "DAVIS")
    later = root / "Annotations" / "480p" / "squares-a" / "00003.png"
    mask = np.zeros(SIZE, np.uint8)
    mask[0:3, 0:3] = 7
    write_indexed_png(later, mask)
    video = DAVISDataset(root, sequences=["squares-a"])[0]
    assert video.first_mask().max() == 2  # propagation itself only reads the first frame
    with pytest.raises(ValueError, match=r"squares-a/00003\.png: object ids \[7\] are not in the first-frame"):
        video.validate_annotations()


def test_frame_of_another_size_names_the_file(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "DAVIS")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "JPEGImages" / "480p" / "squares-a" / "00004.png")
    video = DAVISDataset(root, sequences=["squares-a"])[0]
    with pytest.raises(ValueError, match=r"squares-a/00004\.png: frame is 20x20"):
        list(video.frames())


# -- DAVIS-2016: the official release (grayscale, object = 255) and the 2016 split of a 2017 folder --

def test_davis2016_release_reads_as_its_palette_version(tmp_path: Path) -> None:
    """The grayscale 0/255 release and the palette 0/1 tree of the same videos give the same
    sequences, the same 0/1 first masks and the same frames with single_object=True."""
    release = make_davis_tree(tmp_path / "release", n_objects=1, layout="2016-release")
    palette = make_davis_tree(tmp_path / "palette", n_objects=1, year="2016")
    with Image.open(release / "Annotations" / "480p" / "squares-a" / "00000.png") as im:
        assert im.mode == "L" and set(np.unique(np.array(im)).tolist()) == {0, 255}
    a = DAVISDataset(release, year="2016", split="val", single_object=True)
    b = DAVISDataset(palette, year="2016", split="val", single_object=True)
    assert a.names == b.names == ["squares-a", "squares-b"]
    for va, vb in zip(a, b):
        ma, mb = va.first_mask(), vb.first_mask()
        assert ma.dtype == np.uint8 and set(np.unique(ma).tolist()) == {0, 1}
        np.testing.assert_array_equal(ma, mb)
        np.testing.assert_array_equal(np.stack(list(va.frames())), np.stack(list(vb.frames())))
        va.validate_annotations()


def test_davis2017_rule_on_a_grayscale_release_mask_says_what_to_use(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "release", n_objects=1, layout="2016-release")
    video = DAVISDataset(root, year="2016", split="val")[0]  # single_object=False: 255 is void
    with pytest.raises(ValueError, match=r"squares-a/00000\.png: .*only ids 0 and 255.*task=davis2016"):
        video.first_mask()


def test_single_object_on_a_davis2017_folder_is_any_non_zero_id(tmp_path: Path) -> None:
    """The 2016 split of a DAVIS-2017 folder: several palette ids (and void) make the one object,
    and later frames may hold any id."""
    root = make_davis_tree(tmp_path / "DAVIS", n_objects=2)
    first = root / "Annotations" / "480p" / "squares-a" / "00000.png"
    mask = np.array(Image.open(first))
    mask[0, :3] = 255
    write_indexed_png(first, mask)
    later = np.zeros(SIZE, np.uint8)
    later[:3, :3] = 7
    write_indexed_png(root / "Annotations" / "480p" / "squares-a" / "00003.png", later)
    video = DAVISDataset(root, sequences=["squares-a"], single_object=True)[0]
    np.testing.assert_array_equal(video.first_mask(), (mask != 0).astype(np.uint8))
    video.validate_annotations()  # any non-zero id is the object: 7 is no error here
    with pytest.raises(ValueError, match=r"object ids \[7\]"):
        DAVISDataset(root, sequences=["squares-a"])[0].validate_annotations()


def test_single_object_first_mask_without_object(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "DAVIS", n_objects=1)
    write_indexed_png(root / "Annotations" / "480p" / "squares-a" / "00000.png", np.zeros(SIZE, np.uint8))
    with pytest.raises(ValueError, match=r"squares-a/00000\.png: the first-frame annotation holds no object"):
        DAVISDataset(root, sequences=["squares-a"], single_object=True)[0].first_mask()


def test_split_file_of_frame_pairs_and_its_location(tmp_path: Path) -> None:
    sets = tmp_path / "ImageSets"
    (sets / "480p").mkdir(parents=True)
    pairs = sets / "480p" / "val.txt"
    pairs.write_text(
        "/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png\n"
        "/JPEGImages/480p/bear/00001.jpg /Annotations/480p/bear/00001.png\n\n"
        "/JPEGImages/480p/blackswan/00000.jpg /Annotations/480p/blackswan/00000.png\n"
    )
    assert read_split_file(pairs) == ["bear", "blackswan"]
    assert find_split_file(tmp_path, year="2016", split="val", resolution="480p") == pairs
    (sets / "2016").mkdir()
    (sets / "2016" / "val.txt").write_text("dog\n")
    assert find_split_file(tmp_path, year="2016", split="val", resolution="480p") == sets / "2016" / "val.txt"
    with pytest.raises(FileNotFoundError, match=r"ImageSets/2016/test\.txt \(nor .*ImageSets/480p/test\.txt"):
        find_split_file(tmp_path, year="2016", split="test", resolution="480p")
    bad = sets / "bad.txt"
    bad.write_text("bear\ntwo words\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 2: .*'two words'"):
        read_split_file(bad)
