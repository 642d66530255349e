"""``ResumableClipSampler``: the training order as a function of (seed, epoch), resumable mid-epoch.

Each epoch's order is a permutation drawn from (seed, epoch), split across DDP ranks as
``torch.utils.data.DistributedSampler`` does (Lightning leaves a sampler of that type alone). A
run resumed mid-epoch skips the batches its checkpoint already trained on, so it sees the rest of
the same permutation, as the uninterrupted run would. Every index comes with a draw seed derived
from (seed, epoch, rank, position): datasets that draw at random per item (a random clip start)
use it instead of a worker's global RNG, so those draws resume too.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from corrflow.utils.seeding import derive_seed

# (epoch, batches of this epoch already trained), read when an epoch's iteration starts.
Progress = Callable[[], tuple[int, int]]


def trainer_progress(trainer) -> tuple[int, int]:
    """(epoch, batches of it already trained) of a fitting Lightning trainer, (0, 0) without one:
    what a ``ResumableClipSampler`` reads when an epoch's iteration starts. Derived from the
    restored step count, so it is right after a resume from any step, mid-epoch included."""
    if trainer is None:
        return 0, 0
    epoch, batches, accumulate = trainer.current_epoch, trainer.num_training_batches, trainer.accumulate_grad_batches
    if not isinstance(batches, int) or batches <= 0:
        return epoch, 0
    steps_per_epoch = -(-batches // accumulate)
    return epoch, (trainer.global_step - epoch * steps_per_epoch) * accumulate


class ResumableClipSampler(DistributedSampler):
    """Yields ``(index, draw_seed)`` keys.

    Args:
        dataset: a sized dataset whose ``__getitem__`` takes ``(index, draw_seed)``.
        num_replicas, rank: the DDP world size and this process's rank (1 and 0 alone).
        seed: the run's seed.
        batch_size: per-process batch size (turns skipped batches into skipped items).
        progress: called when an epoch's iteration starts; returns (epoch, batches already
            trained in it). None: epoch from ``set_epoch``, nothing skipped.
        shuffle, drop_last: as ``DistributedSampler`` (an even split across ranks).
    """

    def __init__(
        self,
        dataset: Sized,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        batch_size: int = 1,
        progress: Progress | None = None,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.batch_size, self.progress = batch_size, progress

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.progress is not None:
            epoch, done = self.progress()
            self.set_epoch(epoch)
        else:
            done = 0
        indices = list(super().__iter__())  # this rank's share of the (seed, epoch) permutation
        start = min(max(done, 0) * self.batch_size, len(indices))
        for position in range(start, len(indices)):
            yield indices[position], derive_seed(self.seed, "item", self.epoch, self.rank, position)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` that tells Lightning it resumes mid-epoch (its ``state_dict`` /
    ``load_state_dict`` make it "stateful" to Lightning's fit loop). Its position needs no stored
    state: a ``ResumableClipSampler`` reads (epoch, batches done) from the restored trainer when
    an epoch's iteration starts. ``state_dict`` records that position for the record only."""

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        if isinstance(sampler, ResumableClipSampler) and sampler.progress is not None:
            epoch, done = sampler.progress()
            return {"epoch": epoch, "batches_done": done, "derived_from": "trainer progress"}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to load: the sampler derives the position from the restored trainer."""


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Lightning's per-worker seeding, then ignore SIGINT, so that
    Ctrl-C reaches only the main process (which stops at a step boundary, see
    ``corrflow.lit.checkpoint_on_stop.CheckpointOnStop``) and does not kill the workers under it."""
    pl_worker_init_function(worker_id)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_num_workers() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one), at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return min(4, cores)


def resumable_loader(
    dataset: Dataset,
    *,
    trainer,
    seed: int,
    batch_size: int,
    num_workers: int | None = None,
    pin_memory: bool | None = None,
    sampler_cls: type[ResumableClipSampler] = ResumableClipSampler,
    **sampler_kwargs: Any,
) -> ResumableDataLoader:
    """The training loader every corrflow data module hands Lightning: a ``sampler_cls`` over
    ``dataset`` (this rank's share of the (seed, epoch) order, resumed from ``trainer``'s
    progress), full batches only, workers that ignore Ctrl-C. ``num_workers=None``: the cores
    present, at most 4; ``pin_memory=None``: when CUDA is present."""
    num_workers = default_num_workers() if num_workers is None else num_workers
    pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
    sampler = sampler_cls(
        dataset,
        num_replicas=trainer.world_size if trainer is not None else 1,
        rank=trainer.global_rank if trainer is not None else 0,
        seed=seed,
        batch_size=batch_size,
        progress=lambda: trainer_progress(trainer),
        **sampler_kwargs,
    )
    return ResumableDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=worker_init if num_workers > 0 else None,
    )
