"""The repository's Hydra configs (``conf/``) from code: where they are, the propagation choices
a menu offers, and composing a config.

The tools are Hydra apps; code that builds a tool's configuration without being one (the demo
page, :func:`corrflow.propagate`, the benchmarks) composes it here, so that every caller sees the
same files and the same defaults. :data:`FEATURES` and :data:`PROTOCOLS` are the options of
``conf/features/`` and ``conf/protocol/`` in the order a menu offers them (a test holds them equal
to the folders). Importing this module imports neither Hydra nor torch.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["CONF_DIR", "FEATURES", "PROTOCOLS", "compose_config", "compose_propagate"]

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
FEATURES = ("checkpoint", "imagenet", "lab", "random")  # conf/features/<name>.yaml
PROTOCOLS = ("crw", "corrflow", "crw_fast")  # conf/protocol/<name>.yaml

_HYDRA_LOCK = threading.Lock()


def compose_config(name: str, overrides: list[str] | tuple[str, ...] = (), *, conf_dir: str | Path = CONF_DIR) -> DictConfig:
    """``conf/<name>.yaml`` composed with ``overrides`` (Hydra's compose API).

    Safe from several threads, and inside a running Hydra app (``tools/demo.py``): Hydra's global
    state is set aside for the compose and put back after it.

    Raises:
        hydra.errors.MissingConfigException: no such config, or an override names a missing option.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with _HYDRA_LOCK:
        saved = GlobalHydra.instance().hydra
        GlobalHydra.instance().hydra = None
        try:
            with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
                return compose(config_name=name, overrides=list(overrides))
        finally:
            # initialize_config_dir's exit puts back deep copies of Hydra's singletons, so the
            # instance to restore is the one current now, not the one read above
            GlobalHydra.instance().hydra = saved


def compose_propagate(overrides: list[str] | tuple[str, ...] = (), *, conf_dir: str | Path = CONF_DIR) -> DictConfig:
    """``conf/propagate.yaml`` composed with ``overrides``, as ``tools/propagate.py`` would (see :func:`compose_config`)."""
    return compose_config("propagate", overrides, conf_dir=conf_dir)
