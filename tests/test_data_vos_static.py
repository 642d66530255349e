"""OSVOS's augmentation (flip, zoom 0.75-1.25, rotation +-30 degrees): image and mask stay
aligned, each part of it happens, and without a flip the draws are exactly the affine transform's
(STM's static clips unchanged); the osvos data config gives single frames with all objects."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from corrflow.data.vos.static import FILL, affine_augmentation
from tests.helpers.vos_synthetic import write_davis_tree
from tests.test_finetune import compose_finetune_cfg


def l_shape(h: int = 48, w: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright L on a dark textured background (left-right asymmetric), and its mask."""
    mask = torch.zeros(h, w, dtype=torch.uint8)
    mask[10:38, 14:22] = 1
    mask[30:38, 14:44] = 1
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    image = ((xx * 7 + yy * 3) % 20 / 100.0).expand(3, h, w).clone()
    image[:, mask.bool()] = 0.9
    return image, mask


def test_image_and_mask_stay_aligned_and_every_part_happens():
    image, mask = l_shape()
    augment = affine_augmentation(degrees=30.0, scale=(0.75, 1.25), hflip=0.5)
    torch.manual_seed(0)
    areas, flipped = [], 0
    for _ in range(20):
        img, m = augment(tv_tensors.Image(image), tv_tensors.Mask(mask))
        bright, obj = img.as_subclass(torch.Tensor).mean(0) > 0.5, m.as_subclass(torch.Tensor) == 1
        iou = (bright & obj).sum() / (bright | obj).sum()
        assert iou > 0.85, float(iou)  # only boundary pixels may disagree
        areas.append(int(obj.sum()))
        cols = obj.nonzero()[:, 1].float()
        flipped += int(cols.mean() > 32)  # the L's foot points right; flipped, its mass lies right of centre
    assert 4 <= flipped <= 16
    assert min(areas) < 0.8 * mask.sum() < 1.25 * mask.sum() < max(areas)  # zoomed both ways


def test_without_a_flip_the_draws_are_the_affine_transforms_own():
    image, mask = l_shape()
    affine = v2.RandomAffine(degrees=20, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=(-10, 10, -10, 10),
                             interpolation=v2.InterpolationMode.BILINEAR, fill=FILL)  # fmt: skip
    torch.manual_seed(3)
    a = [affine(tv_tensors.Image(image), tv_tensors.Mask(mask)) for _ in range(3)]
    torch.manual_seed(3)
    ours = affine_augmentation(degrees=20, shear=10, scale=(0.9, 1.1), translate=(0.1, 0.1))
    b = [ours(tv_tensors.Image(image), tv_tensors.Mask(mask)) for _ in range(3)]
    for (ia, ma), (ib, mb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ma, mb)


def test_osvos_data_config_gives_single_frames_with_every_object(tmp_path):
    import hydra

    root = write_davis_tree(tmp_path / "davis", {"a": 4, "b": 3}, size=(32, 40), n_objects=2)
    cfg = compose_finetune_cfg(tmp_path, ["experiment=osvos_parent", f"data.root={root}", "data.size=[32,32]", "data.num_workers=0"])
    assert (cfg.data.n_frames, cfg.data.degrees, list(cfg.data.scale), cfg.data.hflip, cfg.data.shear) == (1, 30.0, [0.75, 1.25], 0.5, 0.0)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup()
    assert len(dm.train_set) == 7  # every annotated frame
    torch.manual_seed(0)
    item = dm.train_set[(0, 123)]
    assert item["frames"].shape == (1, 3, 32, 32) and item["masks"].shape == (1, 32, 32)
    assert item["n_objects"] == len(torch.unique(item["masks"][item["masks"] > 0]))
    counts = [dm.train_set[(i, 7)]["n_objects"] for i in range(7)]
    assert max(counts) == 2  # both objects kept, not one drawn


@pytest.mark.parametrize("hflip", [0.0, 1.0])
def test_static_dataset_flip_option(tmp_path, hflip):
    from corrflow.data.vos.annotated import annotated_videos
    from corrflow.data.vos.static import StaticClipDataset

    root = write_davis_tree(tmp_path / "davis", {"a": 2}, size=(32, 40), n_objects=1)
    frames = [f for v in annotated_videos(root) for f in v.frames]
    ds = StaticClipDataset(frames, size=(32, 40), n_frames=1, degrees=0, shear=0, scale=(1, 1), translate=(0, 0), hflip=hflip)
    item = ds[(0, 5)]
    from corrflow.data.vos.clips import read_sample

    _, mask = read_sample(frames[0])
    expect = mask.flip(-1) if hflip else mask
    assert torch.equal(item["masks"][0] > 0, expect > 0)
