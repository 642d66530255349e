"""Logging set-up for entry scripts: one rank-zero logger, readable output."""

from __future__ import annotations

import logging

from pytorch_lightning.utilities import rank_zero_only


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once (rank zero logs at ``level``, other ranks only warnings)."""
    logging.basicConfig(level=level if rank_zero_only.rank == 0 else logging.WARNING, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
