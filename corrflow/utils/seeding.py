"""Random streams derived from (seed, purpose, rank, step, ...): reproducible, resumable, per rank.

A training step's random draws (colour dropout, jitter, scheduled-sampling coins) and a clip's
random start are functions of the run's seed and *where* they happen (rank, epoch, step, item),
not of how many draws came before. So a run resumed from step k draws at step k + 1 exactly what
an uninterrupted run draws there, and N DDP ranks draw N different augmentations.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed from ``seed`` and any number of int / str keys (NumPy's SeedSequence hashing;
    strings enter through their UTF-8 bytes). Different keys give independent streams."""
    words: list[int] = [int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF]
    for key in keys:
        if isinstance(key, str):
            words.append(len(key) + (1 << 31))
            words.extend(key.encode())
        else:
            words.extend([int(key) & 0xFFFFFFFF, (int(key) >> 32) & 0xFFFFFFFF])
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]) >> 1


@contextmanager
def seeded_device_rng(seed: int, device: torch.device | str) -> Iterator[None]:
    """Within the block, the generator of ``device`` (and torch's CPU generator) is seeded with
    ``seed``; both states are restored afterwards. For draws made on the device itself (dropout
    on a GPU takes the CUDA generator, not the CPU one)."""
    device = torch.device(device)
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)  # the current device: Lightning makes it the module's
        yield


@contextmanager
def seeded_cpu_rng(seed: int) -> Iterator[random.Random]:
    """Within the block, torch's default CPU generator is seeded with ``seed`` (its state before the
    block is restored afterwards; CUDA generators are untouched). Yields a ``random.Random(seed)``
    for Python-level coins, so no global ``random`` state is read or changed either."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield random.Random(seed)
