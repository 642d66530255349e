"""Many processes, one data set: ``tools/propagate.py ... launcher=torchrun`` or the script run
under ``torchrun --nproc_per_node N``.

Each rank takes a share of the videos balanced by frame count (:func:`shard_by_frames`), all
write into the one results folder (each video's files are its own), and scoring runs once, on
rank 0, after every rank has finished. ``torch.distributed`` carries the little that is shared
(the run's name, the rows, errors found while checking inputs): gloo on CPU, nccl on GPU (one
GPU a rank, ``cuda:<LOCAL_RANK>``; more ranks than GPUs share them round-robin and use gloo). A rank that dies leaves its finished videos (their ``.done``
files) for the resumed run, as one process does.

``launcher=torchrun`` starts ``nproc_per_node`` ranks of the same command through
``torch.distributed.run`` (``--standalone``: one machine, a free port); on a CPU the machine's
threads are split between them (``OMP_NUM_THREADS`` = cores / ranks, unless set).
"""

from __future__ import annotations

import datetime
import heapq
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["Ranks", "launch_torchrun", "shard_by_frames", "under_torchrun"]

log = logging.getLogger(__name__)

# A rank that finishes its share early waits for the others at the final barrier: allow long runs.
TIMEOUT = datetime.timedelta(hours=48)


def under_torchrun() -> bool:
    """Whether this process is one rank of a torchrun group (``WORLD_SIZE`` > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def shard_by_frames(lengths: Sequence[int], world_size: int) -> list[list[int]]:
    """Split videos of ``lengths`` frames between ``world_size`` ranks, balanced by frame count.

    Longest first, each video goes to the rank with the fewest frames so far (the lower rank on
    ties); each share lists its video indices in their original order. Deterministic.

    >>> shard_by_frames([10, 3, 7, 4], 2)
    [[0, 1], [2, 3]]
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    heap = [(0, r) for r in range(world_size)]
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i)):
        load, r = heapq.heappop(heap)
        shares[r].append(i)
        heapq.heappush(heap, (load + int(lengths[i]), r))
    return [sorted(s) for s in shares]


class Ranks:
    """This process's place in the group: ``rank``, ``world_size``, the ``device`` it uses, and
    the few collectives the run needs. One process (no torchrun) is rank 0 of 1, and every
    collective is the identity. Use as a context manager: it joins the group on entry (when
    under torchrun and not joined yet) and leaves it on exit."""

    def __init__(self, device: torch.device) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world_size > 1 and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", self.local_rank % max(torch.cuda.device_count(), 1))
        self.device = device
        self._owned = False

    def __enter__(self) -> Ranks:
        import torch.distributed as dist

        if self.world_size > 1 and not dist.is_initialized():
            # nccl needs a GPU of its own a rank; ranks sharing a GPU (or none) exchange through gloo.
            local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
            backend = "nccl" if self.device.type == "cuda" and torch.cuda.device_count() >= local else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend=backend, timeout=TIMEOUT)
            self._owned = True
            log.info("rank %d of %d (%s, %s)", self.rank, self.world_size, backend, self.device)
        return self

    def __exit__(self, *exc) -> None:
        import torch.distributed as dist

        if self._owned and dist.is_initialized():
            dist.destroy_process_group()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def raise_any(self, error: BaseException | None) -> None:
        """Every rank raises when any rank met an error (its own, or one naming the other rank's)."""
        errors = self.gather(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        for r, e in enumerate(errors):
            if e is not None:
                raise RuntimeError(f"rank {r} failed while checking its inputs: {e}")


def launch_torchrun(nproc_per_node: int | str, argv: Sequence[str] | None = None) -> int:
    """Run this command again as ``nproc_per_node`` ranks under ``torch.distributed.run`` and wait.

    ``argv`` (default ``sys.argv``): the script and its overrides; ``launcher=...`` overrides are
    kept (the ranks see ``WORLD_SIZE`` and run the work). ``nproc_per_node='auto'``: one rank per
    GPU, or 2 on a CPU-only machine. Returns torchrun's exit status (0: every rank succeeded).
    """
    from torch.distributed import run as torchrun

    if nproc_per_node == "auto":
        nproc = torch.cuda.device_count() or 2
    else:
        nproc = int(nproc_per_node)
    if nproc < 1:
        raise ValueError(f"nproc_per_node must be >= 1 or 'auto', got {nproc_per_node!r}")
    argv = list(sys.argv if argv is None else argv)
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    log.info("launching %d ranks: torchrun --standalone --nproc_per_node %d %s", nproc, nproc, " ".join(argv))
    try:
        torchrun.main(["--standalone", "--nproc_per_node", str(nproc), *argv])
    except SystemExit as e:  # torchrun exits with its status on failure
        return int(e.code or 0)
    except Exception as e:  # noqa: BLE001 - ChildFailedError: its rank already printed why
        log.error("a rank failed: %s", e)
        return 1
    return 0
