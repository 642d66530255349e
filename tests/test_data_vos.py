"""Annotated sources (DAVIS, YouTube-VOS, salient-object layouts) and static-image clips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from corrflow.data.vos.annotated import (
    AnnotatedFrame,
    annotated_videos,
    read_annotated,
    salient_frames,
)
from corrflow.data.vos.clips import remap_objects
from corrflow.data.vos.datamodule import StaticClipDataModule
from corrflow.data.vos.static import StaticClipDataset
from corrflow.utils.io import write_indexed_png
from tests.helpers.vos_synthetic import write_davis_tree, write_salient_tree


def test_davis_and_youtube_layouts_list_annotated_frames(tmp_path):
    davis = write_davis_tree(tmp_path / "davis", {"a": 4, "b": 3})
    videos = annotated_videos(davis, layout="davis", split="train", validate=True)
    assert [v.name for v in videos] == ["a", "b"] and [len(v) for v in videos] == [4, 3]
    image, mask = read_annotated(videos[0].frames[2])
    assert image.shape == (32, 48, 3) and mask.shape == (32, 48) and set(np.unique(mask)) == {0, 1, 2}
    yt = write_davis_tree(tmp_path / "yt", {"v1": 10, "v2": 6}, resolution="", annotate_every=5)
    videos = annotated_videos(yt, layout="youtube")
    assert [[f.image.name for f in v.frames] for v in videos] == [["00000.png", "00005.png"], ["00000.png", "00005.png"]]
    assert len(annotated_videos([davis, davis], layout="davis")) == 4  # several roots


def test_salient_layout_pairs_images_and_binary_masks(tmp_path):
    root = write_salient_tree(tmp_path / "sal", 3)
    Image.new("RGB", (40, 40)).save(root / "images" / "orphan.jpg")  # no mask: skipped
    frames = salient_frames(root)
    assert [f.image.name for f in frames] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    image, mask = read_annotated(frames[0])
    assert image.shape == (40, 40, 3) and set(np.unique(mask)) == {0, 1}


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="DAVIS root not found"):
        annotated_videos(tmp_path / "nope", layout="davis")
    (tmp_path / "yt" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(ValueError, match="no video folders"):
        annotated_videos(tmp_path / "yt", layout="youtube")
    with pytest.raises(ValueError, match="layout must be"):
        annotated_videos(tmp_path, layout="salient")
    (tmp_path / "sal" / "images").mkdir(parents=True)
    (tmp_path / "sal" / "masks").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image with a mask under"):
        salient_frames(tmp_path / "sal")
    with pytest.raises(FileNotFoundError, match="masks"):
        salient_frames(tmp_path / "yt")
    # sizes that differ: named at setup (salient headers; DAVIS validation)
    root = write_salient_tree(tmp_path / "sal2", 2)
    Image.new("L", (20, 40)).save(root / "masks" / "img1.png")
    with pytest.raises(ValueError, match=r"img1.png: mask is 20x40 but its image .*img1.jpg is 40x40"):
        salient_frames(root)
    davis = write_davis_tree(tmp_path / "davis", {"a": 3})
    write_indexed_png(davis / "Annotations" / "480p" / "a" / "00001.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"00001.png: mask is 10x10"):
        annotated_videos(davis, layout="davis", validate=True)
    with pytest.raises(ValueError, match=r"00001.png: mask is 10x10 but its image"):
        read_annotated(AnnotatedFrame(davis / "JPEGImages" / "480p" / "a" / "00001.png", davis / "Annotations" / "480p" / "a" / "00001.png"))


def test_an_object_id_the_first_frame_lacks_is_a_clear_error(tmp_path):
    davis = write_davis_tree(tmp_path / "davis", {"a": 3})
    path = davis / "Annotations" / "480p" / "a" / "00002.png"
    m = np.zeros((32, 48), np.uint8)
    m[:4, :4] = 9
    write_indexed_png(path, m)
    with pytest.raises(ValueError, match=r"00002.png: object ids \[9\] are not in the first-frame annotation"):
        annotated_videos(davis, layout="davis", validate=True)


def test_remap_objects_keeps_first_frame_objects_renumbered():
    masks = torch.tensor([[[0, 4, 9, 255]], [[9, 4, 7, 0]]], dtype=torch.uint8)  # (T=2, 1, 4)
    out, n = remap_objects(masks, max_objects=5, rng=random.Random(0))
    assert n == 2 and out.tolist() == [[[0, 1, 2, 255]], [[2, 1, 0, 0]]]  # 7 is not in frame 0
    out, n = remap_objects(masks, max_objects=1, rng=random.Random(0))
    assert n == 1 and set(out.unique().tolist()) <= {0, 1, 255}


def shape_image(size=64):
    """An asymmetric bright 'L' (plus a dot) on black: misalignment or a flip would show."""
    image = np.zeros((size, size, 3), np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[12:44, 14:24] = 1
    mask[36:44, 24:46] = 1
    mask[16:22, 40:46] = 1
    image[mask == 1] = (250, 240, 230)
    return image, mask


def test_static_clips_keep_mask_and_image_aligned(tmp_path):
    image, mask = shape_image()
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "x.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "masks" / "x.png")
    ds = StaticClipDataset(salient_frames(tmp_path), size=(48, 48), n_frames=3, degrees=30, shear=15, scale=(0.8, 1.2), translate=(0.15, 0.15))
    torch.manual_seed(0)
    random.seed(0)
    moved = 0
    for _ in range(8):
        item = ds[0]
        frames, masks = item["frames"], item["masks"]
        assert frames.shape == (3, 3, 48, 48) and masks.shape == (3, 48, 48) and item["n_objects"] == 1
        assert item["skipped"] == 0 and masks[0].eq(1).any()
        for t in range(3):
            bright = frames[t].mean(0) > 0.5
            obj = masks[t] == 1
            union = (bright | obj).sum()
            if union == 0:
                continue
            iou = (bright & obj).sum() / union
            assert iou > 0.85, (t, float(iou))  # only boundary pixels may disagree
        moved += int(not torch.equal(masks[0], masks[1]))
    assert moved >= 6  # the frames are transformed, differently


def test_static_datamodule_from_a_davis_tree(tmp_path):
    root = write_davis_tree(tmp_path / "davis", {"a": 3, "b": 2})
    dm = StaticClipDataModule(root=str(root), layout="davis", size=(32, 32), batch_size=2, num_workers=0, pin_memory=False)
    dm.setup("fit")
    assert len(dm.train_set) == 5  # every annotated frame is an image
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (2, 3, 3, 32, 32) and batch["masks"].shape == (2, 3, 32, 32)
    assert batch["masks"].dtype == torch.int64 and torch.all(batch["n_objects"] >= 1)
    with pytest.raises(ValueError, match="layout must be one of"):
        StaticClipDataModule(root=str(root), layout="ytvos")
