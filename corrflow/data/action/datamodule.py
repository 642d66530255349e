"""``ActionVideoDataModule``: class-per-folder videos (:class:`ActionVideoDataset`) for video
classification: a resumable training loader (random frame per segment) and a validation loader
(middle frames)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from corrflow.data.action.videos import ActionVideoDataset
from corrflow.data.sampling import default_num_workers, resumable_loader

log = logging.getLogger(__name__)

__all__ = ["ActionVideoDataModule"]


class ActionVideoDataModule(pl.LightningDataModule):
    """
    Args:
        root: ``<root>/<class>/<video>``.
        train_split_file, val_split_file: UCF-101-style lists (``<class>/<video> [label]``); None:
            every ``val_every``-th video of each class is validation.
        n_segments, size, decoder: see :class:`ActionVideoDataset`.
        batch_size: clips per batch (training drops the last partial batch; validation keeps it).
        num_workers: None: the cores present, at most 4. pin_memory: None: when CUDA is present.

    ``stage`` is 'video' (recorded in checkpoints; see corrflow.finetune). ``classes`` after setup.
    """

    stage = "video"

    def __init__(
        self,
        *,
        root: str | os.PathLike,
        train_split_file: str | None = None,
        val_split_file: str | None = None,
        val_every: int = 5,
        n_segments: int = 8,
        size: Sequence[int] = (112, 112),
        decoder: str = "auto",
        batch_size: int = 8,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root, self.batch_size, self.num_workers, self.pin_memory, self.seed = root, batch_size, num_workers, pin_memory, seed
        common = dict(root=root, val_every=val_every, n_segments=n_segments, size=size, decoder=decoder)
        self._train_kwargs = dict(common, split="train", split_file=train_split_file)
        self._val_kwargs = dict(common, split="val", split_file=val_split_file)
        self.train_set: ActionVideoDataset | None = None
        self.val_set: ActionVideoDataset | None = None

    @property
    def classes(self) -> list[str]:
        assert self.train_set is not None, "call setup() first"
        return self.train_set.classes

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = ActionVideoDataset(**self._train_kwargs)
            self.val_set = ActionVideoDataset(**self._val_kwargs)
            log.info("%d classes; %d training and %d validation videos", len(self.classes), len(self.train_set), len(self.val_set))
            if len(self.train_set) < self.batch_size:
                raise ValueError(f"the training split has {len(self.train_set)} videos, fewer than one batch of {self.batch_size}: lower data.batch_size")

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return resumable_loader(self.train_set, trainer=self.trainer, seed=self.seed, batch_size=self.batch_size,
                                num_workers=self.num_workers, pin_memory=self.pin_memory)  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup() first"
        workers = default_num_workers() if self.num_workers is None else self.num_workers
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=workers,
                          pin_memory=bool(self.pin_memory))  # fmt: skip
