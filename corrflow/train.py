"""``train(cfg)``: the core of ``tools/train.py``, callable from tests and notebooks."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from corrflow.models.quantizer import fit_colour_bins, save_colour_bins, sources_fingerprint

log = logging.getLogger(__name__)


def git_sha() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - not a checkout, or no git
        return None


def resolve_precision(precision: Any) -> Any:
    """'auto' -> bf16 mixed precision on a GPU that supports it, else full fp32."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def colour_bins_path(cfg: DictConfig, datamodule) -> Path:
    """``colour_bins.path``, or the per-data-set default ``<cache_dir>/colour_bins/k<K>-<fingerprint>.npz``."""
    cb = cfg.colour_bins
    if cb.path:
        return Path(cb.path)
    return Path(cfg.paths.cache_dir) / "colour_bins" / f"k{cb.n_bins}-{sources_fingerprint(datamodule.sources())}.npz"


def fit_and_save_colour_bins(cfg: DictConfig, datamodule, path: Path) -> Path:
    """Fit the colour bins on the configured data and save the artefact at ``path``."""
    cb = cfg.colour_bins
    log.info("colour bins: fitting %d k-means bins on up to %d frames -> %s", cb.n_bins, cb.n_frames, path)
    centroids, meta = fit_colour_bins(
        datamodule.sources(),
        n_bins=cb.n_bins,
        n_frames=cb.n_frames,
        pixels_per_frame=cb.pixels_per_frame,
        size=tuple(cfg.data.size),
        seed=cb.seed,
    )
    save_colour_bins(path, centroids, meta)
    return path


def prepare_colour_bins(cfg: DictConfig, datamodule) -> Path:
    """Find (or fit and save) the colour-bin artefact; writes its path into ``cfg.colour_bins.path``.

    With ``colour_bins.path: null`` the artefact is ``<cache_dir>/colour_bins/k<K>-<data fingerprint>.npz``,
    so each data set gets its own bins, fitted once. Resuming from a checkpoint whose bins file is
    gone restores the file from the checkpoint.
    """
    path = colour_bins_path(cfg, datamodule)
    if not path.is_file():
        if cfg.get("ckpt_path"):
            ckpt = torch.load(cfg.ckpt_path, map_location="cpu", weights_only=False)
            bins = ckpt.get("corrflow", {}).get("colour_bins")
            if bins is not None:
                log.info("colour bins: restoring %s from checkpoint %s", path, cfg.ckpt_path)
                save_colour_bins(path, bins, {"restored_from": str(cfg.ckpt_path)})
        if not path.is_file():
            if not cfg.colour_bins.fit_if_missing:
                raise FileNotFoundError(f"colour-bin file not found: {path} (fit one with tools/fit_colour_bins.py, or set colour_bins.fit_if_missing=true)")
            fit_and_save_colour_bins(cfg, datamodule, path)
    with open_dict(cfg):
        cfg.colour_bins.path = str(path)
    return path


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train CorrFlow as configured. Returns (final metrics, the objects built)."""
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path not found: {cfg.ckpt_path}")
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    datamodule = hydra.utils.instantiate(cfg.data)
    prepare_colour_bins(cfg, datamodule)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]
    with open_dict(cfg):
        cfg.trainer.precision = resolve_precision(cfg.trainer.get("precision", "auto"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    hparams = {"config": OmegaConf.to_container(cfg, resolve=True), "git_sha": git_sha()}
    for lg in trainer.loggers:
        lg.log_hyperparams(hparams)
    log.info("git %s; output in %s", hparams["git_sha"], trainer.default_root_dir)

    trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    final = Path(trainer.default_root_dir) / "checkpoints" / "final.ckpt"
    trainer.save_checkpoint(final)
    log.info("final checkpoint: %s", final)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return metrics, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer, "final_ckpt": final}
