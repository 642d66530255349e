"""LightningDataModules for training segmenters: static-image clips (:class:`StaticClipDataModule`)
and ordered video clips with a scheduled maximum frame skip (:class:`VOSClipDataModule`).

Batches: ``{"frames": (B, T, 3, h, w), "masks": (B, T, h, w) int64, "n_objects": (B,),
"skipped": (B,), ...}`` (see :mod:`corrflow.data.vos.clips`).

The maximum skip is a function of the global step (:func:`max_skip_at`), read by the sampler in
the main process as it hands out each index, so it follows training (and a resumed run) without
reaching into the loader workers (which prefetch a few batches: the skip they use may lag the step
by that many). The order, its split across DDP ranks, its mid-epoch resumption and each item's
random draws are pretraining's (:class:`~corrflow.data.sampling.ResumableClipSampler`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from corrflow.data.sampling import ResumableClipSampler, resumable_loader
from corrflow.data.vos.annotated import LAYOUTS, annotated_videos, salient_frames
from corrflow.data.vos.clips import VOSClipDataset
from corrflow.data.vos.static import StaticClipDataset
from corrflow.utils.schedules import linear_schedule

log = logging.getLogger(__name__)

__all__ = ["ScheduledSkipSampler", "StaticClipDataModule", "VOSClipDataModule", "max_skip_at"]


def max_skip_at(step: int, *, start: int = 0, end: int = 25, ramp_steps: int) -> int:
    """The maximum frame skip at ``step``: linear from ``start`` (step 0) to ``end`` (``ramp_steps``
    and after), rounded to the nearest integer."""
    return int(round(linear_schedule(step, ramp_steps, start=start, end=end)))


class ScheduledSkipSampler(ResumableClipSampler):
    """:class:`~corrflow.data.sampling.ResumableClipSampler` (a (seed, epoch) permutation split
    across DDP ranks, resumable mid-epoch, a draw seed per item) with the current maximum skip
    appended to each key: ``(index, draw_seed, max_skip())``, read as the key is handed out."""

    def __init__(self, dataset: Sized, *, max_skip: Callable[[], int | None], **kwargs) -> None:
        super().__init__(dataset, **kwargs)
        self.max_skip = max_skip

    def __iter__(self) -> Iterator[tuple[int, int, int | None]]:
        for index, draw_seed in super().__iter__():
            yield index, draw_seed, self.max_skip()


class _SegmentationDataModule(pl.LightningDataModule):
    """Loader plumbing shared by the two data modules; subclasses build the dataset."""

    def __init__(self, *, batch_size: int, num_workers: int | None, pin_memory: bool | None, seed: int) -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.pin_memory, self.seed = batch_size, num_workers, pin_memory, seed
        self.train_set: Dataset | None = None

    def build_dataset(self) -> Dataset:
        raise NotImplementedError

    def current_max_skip(self) -> int | None:
        return None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self.build_dataset()
            log.info("%s: %d training items", type(self.train_set).__name__, len(self.train_set))
            if len(self.train_set) < self.batch_size:
                raise ValueError(
                    f"the training set has {len(self.train_set)} items, fewer than one batch of {self.batch_size}: "
                    "lower data.batch_size or add data (video clips: raise data.clips_per_video)"
                )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return resumable_loader(
            self.train_set, trainer=self.trainer, seed=self.seed, batch_size=self.batch_size,
            num_workers=self.num_workers, pin_memory=self.pin_memory,
            sampler_cls=ScheduledSkipSampler, max_skip=self.current_max_skip,
        )


class StaticClipDataModule(_SegmentationDataModule):
    """Synthetic clips from single images with masks (:class:`~corrflow.data.vos.static.StaticClipDataset`).
    Its ``stage`` is 'static' (recorded in the checkpoints of the runs it feeds).

    Args:
        root: one root or a list (same layout).
        layout: 'salient' (``images/`` + ``masks/``), or 'davis' / 'youtube' (every annotated
            frame of the videos used as an image); see :mod:`corrflow.data.vos.annotated`.
        year, split, resolution, sequences, validate: which videos (davis / youtube layouts).
        size, n_frames, degrees, shear, scale, translate, max_objects, hflip: the clips.
            With ``n_frames=1`` and ``max_objects`` above any frame's count, single augmented
            frames with all their objects: OSVOS's parent training (``conf/data/osvos.yaml``).
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike | Sequence[str],
        layout: str = "davis",
        year: str = "2017",
        split: str = "train",
        resolution: str = "480p",
        sequences: Sequence[str] | None = None,
        validate: bool = True,
        size: Sequence[int] = (384, 384),
        n_frames: int = 3,
        degrees: float = 20.0,
        shear: float = 10.0,
        scale: Sequence[float] = (0.9, 1.1),
        translate: Sequence[float] = (0.1, 0.1),
        max_objects: int = 3,
        hflip: float = 0.0,
        batch_size: int = 4,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, seed=seed)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.root, self.layout = root, layout
        self.video_kwargs = dict(year=str(year), split=split, resolution=resolution, sequences=sequences, validate=validate)
        self.clip_kwargs = dict(
            size=tuple(size), n_frames=n_frames, degrees=degrees, shear=shear, scale=tuple(scale), translate=tuple(translate),
            max_objects=max_objects, hflip=hflip,
        )

    stage = "static"

    def build_dataset(self) -> StaticClipDataset:
        if self.root is None:
            raise ValueError("data.root is not set: the folder of the images (layout=salient) or videos (davis / youtube)")
        if self.layout == "salient":
            frames = salient_frames(self.root)
        else:
            videos = annotated_videos(self.root, layout=self.layout, **self.video_kwargs)
            frames = [f for v in videos for f in v.frames]
        return StaticClipDataset(frames, **self.clip_kwargs)


class VOSClipDataModule(_SegmentationDataModule):
    """Ordered clips of annotated videos with a scheduled maximum skip (:class:`~corrflow.data.vos.clips.VOSClipDataset`).
    Its ``stage`` is 'video'.

    Args:
        root, layout ('davis' or 'youtube'), year, split, resolution, sequences, validate: which videos.
        size, n_frames, clips_per_video, max_objects, scale, hflip: the clips.
        max_skip: ``{start, end, ramp_steps}``: linear from ``start`` to ``end`` over ``ramp_steps``
            optimizer steps (null: the whole run, ``trainer.estimated_stepping_batches``).
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike | Sequence[str],
        layout: str = "davis",
        year: str = "2017",
        split: str = "train",
        resolution: str = "480p",
        sequences: Sequence[str] | None = None,
        validate: bool = True,
        size: Sequence[int] = (384, 384),
        n_frames: int = 3,
        clips_per_video: int = 1,
        max_objects: int = 3,
        scale: Sequence[float] = (1.0, 1.3),
        hflip: float = 0.5,
        max_skip: Mapping[str, int | None] | None = None,
        batch_size: int = 4,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, seed=seed)
        if layout not in ("davis", "youtube"):
            raise ValueError(f"layout must be 'davis' or 'youtube' for video clips, got {layout!r}")
        self.root, self.layout = root, layout
        self.video_kwargs = dict(year=str(year), split=split, resolution=resolution, sequences=sequences, validate=validate)
        self.clip_kwargs = dict(
            size=tuple(size), n_frames=n_frames, clips_per_video=clips_per_video, max_objects=max_objects, scale=tuple(scale), hflip=hflip
        )
        schedule = {"start": 0, "end": 25, "ramp_steps": None, **dict(max_skip or {})}
        unknown = set(schedule) - {"start", "end", "ramp_steps"}
        if unknown:
            raise ValueError(f"max_skip takes start, end and ramp_steps, got {sorted(unknown)}")
        self.skip_schedule = schedule
        self._total_steps: int | None = None

    stage = "video"

    def build_dataset(self) -> VOSClipDataset:
        if self.root is None:
            raise ValueError("data.root is not set: the folder of the annotated videos")
        videos = annotated_videos(self.root, layout=self.layout, min_frames=1, **self.video_kwargs)
        return VOSClipDataset(videos, max_skip=self.skip_schedule["end"], **self.clip_kwargs)

    def ramp_steps(self) -> int:
        if self.skip_schedule["ramp_steps"] is not None:
            return int(self.skip_schedule["ramp_steps"])
        if self._total_steps is None:
            trainer = self.trainer
            try:
                self._total_steps = int(trainer.estimated_stepping_batches) if trainer is not None else 1
            except Exception:  # noqa: BLE001 - not attached to a fitting trainer
                self._total_steps = 1
        return self._total_steps

    def current_max_skip(self) -> int:
        """The schedule at the trainer's global step (step 0 without a trainer)."""
        step = self.trainer.global_step if self.trainer is not None else 0
        return max_skip_at(step, start=self.skip_schedule["start"], end=self.skip_schedule["end"], ramp_steps=self.ramp_steps())
