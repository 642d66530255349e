"""wandb is an optional extra: without it, logger=wandb is one clear error with the pip command."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from corrflow.utils.loggers import make_wandb_logger

WANDB_YAML = Path(__file__).resolve().parents[1] / "conf" / "logger" / "wandb.yaml"


def _wandb_cfg(tmp_path):
    cfg = OmegaConf.load(WANDB_YAML)
    cfg.wandb.name, cfg.wandb.save_dir, cfg.wandb.tags = "t", str(tmp_path), []
    return cfg.wandb


def test_missing_wandb_is_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails as if not installed
    with pytest.raises(ImportError, match=r"logger=wandb needs wandb.*`pip install wandb`.*logger=csv") as e:
        make_wandb_logger(mode="offline", save_dir=str(tmp_path))
    assert "\n" not in str(e.value) and e.value.name == "wandb"
    # Built from the shipped config as train.py builds it: Hydra wraps it, the cause is ours.
    with pytest.raises(InstantiationException) as e:
        hydra.utils.instantiate(_wandb_cfg(tmp_path))
    assert isinstance(e.value.__cause__, ImportError) and "pip install wandb" in str(e.value.__cause__)


def test_the_csv_default_needs_no_wandb(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)
    cfg = OmegaConf.load(WANDB_YAML.parent / "csv.yaml")
    cfg.csv.save_dir = str(tmp_path)
    logger = hydra.utils.instantiate(cfg.csv)
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.save()
    assert list(tmp_path.rglob("metrics.csv"))


def test_with_wandb_installed_the_logger_is_built_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials
    logger = hydra.utils.instantiate(_wandb_cfg(tmp_path))
    assert type(logger).__name__ == "WandbLogger"
    assert logger._wandb_init["mode"] == "offline"
