"""ResNet encoders as propagation features: a trained corrflow checkpoint, or the same
architecture untrained (seeded), the baseline that shows what training buys."""

from __future__ import annotations

import logging
import os

import torch

from corrflow.models.checkpoint import load_encoder
from corrflow.models.encoder import ResNetEncoder, corrflow_encoder, crw_encoder

__all__ = ["checkpoint_features", "random_features"]

log = logging.getLogger(__name__)

ARCHS = {"corrflow": corrflow_encoder, "crw": crw_encoder}


def checkpoint_features(path: str | os.PathLike | None) -> ResNetEncoder:
    """The encoder of a corrflow training checkpoint, in eval mode.

    Raises:
        ValueError: no path given, or the file is not a corrflow checkpoint (from ``load_encoder``).
        FileNotFoundError: no file at ``path``.
    """
    if path is None or str(path) == "":
        raise ValueError("features=checkpoint needs a checkpoint: ckpt=/path/to/last.ckpt (or features=lab|random|imagenet)")
    return load_encoder(path)  # eval mode


def random_features(*, arch: str = "corrflow", seed: int = 0, padding_mode: str = "zeros", init: str | None = None) -> ResNetEncoder:
    """An untrained encoder, its initial weights drawn from ``seed`` (the global RNG is left alone).
    ``padding_mode='reflect'`` with ``arch='crw'`` is CRW's 'scratch' encoder. ``init``: None for
    the architecture's own rule (corrflow: 'pytorch', as its released code; crw: 'torchvision'), or
    either by name."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = ARCHS[arch](padding_mode=padding_mode, init=init)  # the weights drawn do not depend on padding
    log.info("features=random: the untrained %s encoder, %s initialisation, seed %d", arch, encoder.config["init"], seed)
    return encoder.eval()
