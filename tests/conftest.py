"""Shared fixtures: tiny video data and a composed training config pointed at it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from tests.helpers.synthetic import write_frame_folder

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@pytest.fixture(scope="session", autouse=True)
def caches_in_tmp(tmp_path_factory):
    """torch.compile's kernel cache and matplotlib's font cache go into the session's pytest
    folder (removed with it), not into $TMPDIR/torchinductor_<user> or ~/.cache."""
    import os

    saved = {k: os.environ.get(k) for k in ("TORCHINDUCTOR_CACHE_DIR", "MPLCONFIGDIR")}
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("torchinductor"))
    os.environ["MPLCONFIGDIR"] = str(tmp_path_factory.mktemp("matplotlib"))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def one_thread(monkeypatch):
    """Tiny inputs: one torch thread is faster, and immune to a busy machine's oversubscription.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``. OMP_NUM_THREADS=1 too, which
    the tools' ``threads=auto`` respects (corrflow.utils.threads)."""
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def video_root(tmp_path: Path) -> Path:
    """Three frame-folder videos of 13 frames each (enough for one tiled 3x4 clip, plus one)."""
    root = tmp_path / "videos"
    for i in range(3):
        write_frame_folder(root / f"video{i}", n_frames=13, seed=i)
    return root


def compose_train_cfg(tmp_path: Path, overrides: list[str]) -> DictConfig:
    """The train config as Hydra would build it, with paths and a tiny, fast data setting."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=overrides)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        del cfg["hydra"]  # as @hydra.main hands it over: the hydra node lives in HydraConfig
    GlobalHydra.instance().clear()
    return cfg


TINY = [
    "data.size=[32,32]",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.pin_memory=false",
    "data.sampling=random",
    "data.clips_per_video=2",
    "colour_bins.n_frames=30",
    "trainer.accelerator=cpu",
    "trainer.max_steps=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
]


@pytest.fixture
def tiny_train_cfg(tmp_path: Path, video_root: Path):
    """A factory: ``tiny_train_cfg(*extra_overrides)`` -> a composed, runnable config."""

    def make(*extra: str) -> DictConfig:
        return compose_train_cfg(tmp_path, [f"data.root={video_root}", *TINY, *extra])

    return make
