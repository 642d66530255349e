"""Logger factories: wandb (an optional extra) that never waits on a network it does not have."""

from __future__ import annotations

import logging
import netrc
import os

log = logging.getLogger(__name__)

WANDB_MISSING = (
    "logger=wandb needs wandb, which is not installed: `pip install wandb`, "
    "or choose another logger: logger=csv (the default), tensorboard or none"
)


def require_wandb() -> None:
    """Raise one clear ImportError (with the pip command) when wandb is not installed."""
    try:
        import wandb  # noqa: F401
    except ImportError as e:
        raise ImportError(WANDB_MISSING, name="wandb") from e


def wandb_has_credentials() -> bool:
    """True if a wandb API key is set in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("//")[-1]) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str = "auto") -> str:
    """'auto' -> 'online' with credentials, else 'offline' (WANDB_MODE, if set, wins)."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_has_credentials() else "offline"


def make_wandb_logger(*, mode: str = "auto", **kwargs):
    """A Lightning ``WandbLogger``; with ``mode='auto'`` it logs offline when there are no
    credentials (sync later with ``wandb sync``), so a run never hangs on a login prompt.

    Raises:
        ImportError: wandb is not installed (the message says how to install it).
    """
    require_wandb()
    from pytorch_lightning.loggers import WandbLogger

    resolved = resolve_wandb_mode(mode)
    if resolved == "offline":
        log.info("wandb: no credentials found, logging offline (sync later with `wandb sync <run dir>`)")
    return WandbLogger(mode=resolved, **kwargs)
