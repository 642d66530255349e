"""Static-image pretraining for memory-based segmenters (STM's first stage): synthetic clips made
from one image and its mask by random affine transforms.

Each clip frame is the image (resized to cover the crop) under its own random affine transform
(rotation, shear, zoom, translation) followed by a random crop. The image and its mask go through
one ``torchvision.transforms.v2`` call together, so they get the same parameters (the mask with
nearest-neighbour sampling), and stay aligned. Items have the layout of
:class:`corrflow.data.vos.clips.VOSClipDataset`'s (without ``frame_index`` and ``max_skip``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from corrflow.data.vos.annotated import AnnotatedFrame
from corrflow.data.vos.clips import VOID_ID, RetryingDataset, cover_size, keep_first_frame_objects, read_sample, remap_objects

__all__ = ["StaticClipDataset", "affine_augmentation"]

FILL = {tv_tensors.Image: 0, tv_tensors.Mask: 0}


def affine_augmentation(
    *, degrees: float, shear: float = 0.0, scale: Sequence[float] = (1.0, 1.0), translate: Sequence[float] = (0.0, 0.0), hflip: float = 0.0
) -> v2.Transform:
    """One random affine transform (rotation +-``degrees``, shear +-``shear`` on both axes, zoom in
    ``scale``, translation up to ``translate`` of (width, height)), then a horizontal flip with
    probability ``hflip``, on the same canvas. Called as ``transform(image, mask)`` with a
    ``tv_tensors.Image`` / ``Video`` and a ``tv_tensors.Mask``, both get the same parameters (the
    mask sampled nearest-neighbour), so they stay aligned; uncovered pixels are 0 in both.

    Random draws come from torch's default CPU generator. Without a flip (``hflip=0``) the flip is
    not in the chain at all, so the draws are exactly those of the affine transform alone.
    """
    steps: list[v2.Transform] = [
        v2.RandomAffine(
            degrees=degrees,
            translate=tuple(translate),
            scale=tuple(scale),
            shear=(-shear, shear, -shear, shear),
            interpolation=v2.InterpolationMode.BILINEAR,
            fill=FILL,
        )
    ]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    return v2.Compose(steps)


class StaticClipDataset(RetryingDataset):
    """Synthetic clips from single annotated images.

    Args:
        frames: the annotated images (:func:`corrflow.data.vos.annotated.salient_frames`, or every annotated
            frame of :func:`corrflow.data.vos.annotated.annotated_videos`).
        size: (h, w) of the clip frames.
        n_frames: frames per clip (3).
        degrees: rotation range, +-degrees.
        shear: shear range, +-degrees (both axes).
        scale: zoom range (min, max).
        translate: maximum translation as a fraction of (width, height).
        max_objects: objects kept per clip.
        first_frame_tries: draws of the first frame's transform to keep an object in it; then the
            untransformed image (resized to the crop) is used.
        hflip: probability of a horizontal flip of each frame (after the affine transform).
    """

    def __init__(
        self,
        frames: Sequence[AnnotatedFrame],
        *,
        size: Sequence[int] = (384, 384),
        n_frames: int = 3,
        degrees: float = 20.0,
        shear: float = 10.0,
        scale: Sequence[float] = (0.9, 1.1),
        translate: Sequence[float] = (0.1, 0.1),
        max_objects: int = 3,
        first_frame_tries: int = 10,
        hflip: float = 0.0,
    ) -> None:
        if not frames:
            raise ValueError("no annotated image to make static clips from")
        if n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {n_frames}")
        self.frames, self.size, self.n_frames = list(frames), tuple(size), n_frames
        self.max_objects, self.first_frame_tries = max_objects, first_frame_tries
        self.transform = v2.Compose(
            [
                affine_augmentation(degrees=degrees, shear=shear, scale=scale, translate=translate, hflip=hflip),
                v2.RandomCrop(self.size, pad_if_needed=True, fill=FILL),
            ]
        )

    def __len__(self) -> int:
        return len(self.frames)

    def make_item(self, index: int, *, max_skip: int | None, rng: random.Random) -> dict:
        image, mask = read_sample(self.frames[index])
        mask, _ = remap_objects(mask[None], max_objects=self.max_objects, rng=rng)
        hw = cover_size(image.shape[-2:], self.size)
        image = TF.resize(tv_tensors.Image(image), hw, antialias=True)
        mask = TF.resize(tv_tensors.Mask(mask), hw)
        frames, masks = [], []
        for t in range(self.n_frames):
            for _ in range(self.first_frame_tries if t == 0 else 1):
                f, m = self.transform(image, mask)
                if t > 0 or _has_object(m):
                    break
            else:  # no draw kept an object in view: the whole image, resized to the crop
                f, m = TF.resize(image, list(self.size), antialias=True), TF.resize(mask, list(self.size))
            frames.append(f.as_subclass(Tensor))
            masks.append(m.as_subclass(Tensor)[0])
        masks, n = keep_first_frame_objects(torch.stack(masks))
        return {"frames": torch.stack(frames).float().div_(255.0), "masks": masks, "n_objects": n}


def _has_object(mask: Tensor) -> bool:
    return bool(((mask > 0) & (mask != VOID_ID)).any())
