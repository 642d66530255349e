"""Training clips for memory-based segmenters (STM's main training): a few ordered annotated
frames of one video, the frame skip between them drawn up to a maximum that the training
schedule raises (0 -> 25 in STM).

Items: ``{"frames": (T, 3, h, w) float in [0, 1], "masks": (T, h, w) int64 ids (0 background,
1..n objects, 255 void), "n_objects": n, "frame_index": (T,) annotated-frame positions,
"max_skip": the maximum used, "skipped": unreadable samples replaced}``.

The objects of a clip are those of its first frame (up to ``max_objects``, drawn at random,
renumbered 1..n); any other id in the later frames is background for that clip. A sample that
cannot be read (a broken file, sizes that differ) is replaced by another with a warning naming the
file, and counted in ``skipped``; a draw whose first frame shows no object is drawn again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from corrflow.data.vos.annotated import AnnotatedFrame, AnnotatedVideo, read_annotated
from corrflow.utils.seeding import seeded_cpu_rng

log = logging.getLogger(__name__)

__all__ = ["SampleReadError", "VOSClipDataset", "remap_objects"]

VOID_ID = 255


class SampleReadError(RuntimeError):
    """A training sample could not be read; the message names the file."""


class Redraw(Exception):
    """The draw is unusable (no object in the clip's first frame): draw again, not an error."""


def read_sample(frame: AnnotatedFrame) -> tuple[Tensor, Tensor]:
    """(3, H, W) uint8 image and (H, W) uint8 ids; read failures become :class:`SampleReadError`."""
    try:
        image, mask = read_annotated(frame)
    except (OSError, ValueError) as e:
        raise SampleReadError(str(e)) from e
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), torch.from_numpy(mask)


def remap_objects(masks: Tensor, *, max_objects: int, rng: random.Random) -> tuple[Tensor, int]:
    """Keep up to ``max_objects`` of the objects of ``masks[0]`` (drawn with ``rng``), renumbered
    1..n in id order; other ids become background, void (255) stays.

    Args:
        masks: (T, H, W) uint8 ids.

    Returns:
        (T, H, W) int64 ids and n.

    Raises:
        Redraw: the first frame holds no object.
    """
    ids = [int(i) for i in torch.unique(masks[0]).tolist() if i not in (0, VOID_ID)]
    if not ids:
        raise Redraw
    if len(ids) > max_objects:
        ids = sorted(rng.sample(ids, max_objects))
    lut = torch.zeros(256, dtype=torch.int64)
    lut[VOID_ID] = VOID_ID
    for k, i in enumerate(ids, start=1):
        lut[i] = k
    return lut[masks.long()], len(ids)


def keep_first_frame_objects(masks: Tensor) -> tuple[Tensor, int]:
    """Objects absent from the first frame (e.g. cropped away) become background; the others are
    renumbered 1..n. (T, H, W) int64 -> (T, H, W) int64, n. Raises :class:`Redraw` when none is left."""
    return remap_objects(masks.to(torch.uint8), max_objects=255, rng=random.Random(0))


def cover_size(hw: Sequence[int], size: Sequence[int], factor: float = 1.0) -> list[int]:
    """The (h, w) that keeps the aspect ratio of ``hw`` and covers ``size`` times ``factor``."""
    s = max(size[0] / hw[0], size[1] / hw[1]) * factor
    return [max(round(hw[0] * s), size[0]), max(round(hw[1] * s), size[1])]


class RetryingDataset(Dataset):
    """``__getitem__`` over ``make_item``, replacing unreadable samples (counted) and redrawing
    unusable ones.

    Keys: an index, ``(index, draw_seed)`` or ``(index, draw_seed, max_skip)`` as
    :class:`corrflow.data.vos.datamodule.ScheduledSkipSampler` yields them. With a draw seed every
    random draw of the item (frame positions, crops, transforms, replacements) comes from it, so
    it is the same wherever and whenever the item is loaded (a resumed run draws what the
    uninterrupted one would); without, from the worker's random state.
    """

    max_retries = 20

    def make_item(self, index: int, *, max_skip: int | None, rng: random.Random) -> dict:
        raise NotImplementedError

    def __getitem__(self, key: int | tuple) -> dict:
        index, draw_seed, max_skip = (*key, None, None)[:3] if isinstance(key, tuple) else (key, None, None)
        seed = draw_seed if draw_seed is not None else random.getrandbits(63)
        skipped, last = 0, None
        with seeded_cpu_rng(seed) as rng:  # torch's draws (the v2 transforms) and Python's
            for _ in range(self.max_retries + 1):
                try:
                    item = self.make_item(index, max_skip=max_skip, rng=rng)
                    item["skipped"] = skipped
                    return item
                except Redraw:
                    pass
                except SampleReadError as e:
                    skipped += 1
                    last = e
                    log.warning("skipping a training sample: %s", e)
                index = rng.randrange(len(self))
        raise SampleReadError(f"{self.max_retries + 1} draws in a row gave no usable sample (last read error: {last})")


class VOSClipDataset(RetryingDataset):
    """Ordered clips of annotated frames with a frame skip up to ``max_skip``.

    Args:
        videos: the annotated videos (:func:`corrflow.data.vos.annotated.annotated_videos`).
        size: (h, w) of the training crops.
        n_frames: frames per clip (3).
        max_skip: the largest skip used when the key brings none (the schedule sampler brings
            the current one): consecutive clip frames are 1 .. max_skip + 1 annotated frames apart.
        clips_per_video: items per video per epoch.
        max_objects: objects kept per clip.
        scale: range of a random zoom of the whole clip before the crop (1 = the frame just covers the crop).
        hflip: probability of flipping the whole clip.
        crop_tries: crops tried to keep an object in the first frame.
    """

    def __init__(
        self,
        videos: Sequence[AnnotatedVideo],
        *,
        size: Sequence[int] = (384, 384),
        n_frames: int = 3,
        max_skip: int = 25,
        clips_per_video: int = 1,
        max_objects: int = 3,
        scale: Sequence[float] = (1.0, 1.3),
        hflip: float = 0.5,
        crop_tries: int = 10,
    ) -> None:
        if n_frames < 2:
            raise ValueError(f"n_frames must be >= 2, got {n_frames}")
        usable = [v for v in videos if len(v) >= n_frames]
        for v in videos:
            if len(v) < n_frames:
                log.warning("skipping video %s: %d annotated frames, fewer than a %d-frame clip", v.name, len(v), n_frames)
        if not usable:
            raise ValueError(f"no video has the {n_frames} annotated frames a clip needs ({len(videos)} videos given)")
        self.videos, self.size, self.n_frames = usable, tuple(size), n_frames
        self.max_skip, self.clips_per_video, self.max_objects = max_skip, clips_per_video, max_objects
        self.scale, self.crop_tries = tuple(scale), crop_tries
        self.crop = v2.RandomCrop(self.size, pad_if_needed=True)
        self.flip = v2.RandomHorizontalFlip(hflip)

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    def frame_positions(self, n: int, max_skip: int, rng: random.Random) -> list[int]:
        """Ordered positions among ``n`` annotated frames, consecutive ones 1..max_skip + 1 apart
        (the bound shrinks for a video too short for it)."""
        limit = max(1, min(max_skip + 1, (n - 1) // (self.n_frames - 1)))
        gaps = [rng.randint(1, limit) for _ in range(self.n_frames - 1)]
        pos = [rng.randint(0, n - 1 - sum(gaps))]
        for g in gaps:
            pos.append(pos[-1] + g)
        return pos

    def make_item(self, index: int, *, max_skip: int | None, rng: random.Random) -> dict:
        video = self.videos[index % len(self.videos)]
        max_skip = self.max_skip if max_skip is None else int(max_skip)
        pos = self.frame_positions(len(video), max_skip, rng)
        images, masks = zip(*(read_sample(video.frames[p]) for p in pos))
        if len({tuple(im.shape) for im in images}) > 1:
            raise SampleReadError(f"video {video.name}: frames of different sizes ({video.frames[pos[0]].image} ...)")
        masks, _ = remap_objects(torch.stack(masks), max_objects=self.max_objects, rng=rng)
        frames = tv_tensors.Video(torch.stack(images))
        masks = tv_tensors.Mask(masks)
        hw = cover_size(frames.shape[-2:], self.size, rng.uniform(*self.scale))
        frames, masks = TF.resize(frames, hw, antialias=True), TF.resize(masks, hw)
        for _ in range(self.crop_tries):
            f, m = self.crop(frames, masks)
            if ((m[0] > 0) & (m[0] != VOID_ID)).any():
                break
        f, m = self.flip(f, m)
        m, n = keep_first_frame_objects(m.as_subclass(Tensor))
        return {
            "frames": f.as_subclass(Tensor).float().div_(255.0),
            "masks": m,
            "n_objects": n,
            "frame_index": torch.tensor(pos),
            "max_skip": max_skip,
        }
