"""``train(cfg)``: the core of ``tools/train.py``, callable from tests and notebooks."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from corrflow.lit.checkpoint_on_stop import CheckpointOnStop
from corrflow.models.checkpoint import not_a_checkpoint
from corrflow.models.quantizer import fit_colour_bins, save_colour_bins, sources_fingerprint
from corrflow.utils.moved import legacy_pickle

log = logging.getLogger(__name__)

RANK_ENV_VARS = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK", "LOCAL_RANK")


def resumed_run_dir(ckpt_path: str | None) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/<file>.ckpt`` with ``<run>/.hydra``),
    or None: a resumed run writes into its own folder."""
    if not ckpt_path:
        return None
    ckpt = Path(ckpt_path).resolve()
    run = ckpt.parent.parent
    if ckpt.parent.name == "checkpoints" and (run / ".hydra").is_dir():
        return run
    return None


def _run_dir_resolver(ckpt_path: str | None, default: str) -> str:
    run = resumed_run_dir(ckpt_path)
    return str(run) if run is not None else default


def _config_subdir_resolver(ckpt_path: str | None, stamp: str) -> str:
    return f".hydra/resumed-{stamp}" if resumed_run_dir(ckpt_path) is not None else ".hydra"


def register_resolvers() -> None:
    """``corrflow_run_dir`` and ``corrflow_config_subdir``, used by conf/train.yaml's hydra node:
    resuming ``ckpt_path=<run>/checkpoints/last.ckpt`` writes into ``<run>`` (pictures, checkpoints,
    the log and the CSV continue there), and the resumed run's config goes to
    ``<run>/.hydra/resumed-<time>/`` beside the original's ``.hydra/config.yaml``."""
    for name, fn in (("corrflow_run_dir", _run_dir_resolver), ("corrflow_config_subdir", _config_subdir_resolver)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


def launch_rank() -> int:
    """This process's rank as the launcher set it in the environment (torchrun, SLURM, Lightning's
    own DDP launcher), before any process group exists; 0 when none is set."""
    for var in RANK_ENV_VARS:
        value = os.environ.get(var)
        if value not in (None, "", "0"):
            return int(value)
    return 0


def resume_command(ckpt_placeholder: str = "{ckpt}") -> str:
    """The command that resumes this run: the same script and overrides, with ``ckpt_path`` last."""
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # not under @hydra.main (tests, notebooks)
        overrides = []
    overrides = [o for o in overrides if not o.lstrip("+~").startswith("ckpt_path=")]
    script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else "tools/train.py"
    return shlex.join(["python", os.path.relpath(script) if os.path.isabs(script) else script, *overrides]) + f" ckpt_path={ckpt_placeholder}"


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


def wait_for_colour_bins(path: Path, *, timeout_s: float, poll_s: float = 2.0) -> None:
    """Block until rank 0 has written ``path`` (a file barrier: it works before any process group
    exists, as under torchrun or SLURM where every rank runs this script from the start)."""
    start = last_note = time.monotonic()
    log.info("colour bins: rank %d waits for rank 0 to write %s", launch_rank(), path)
    while not path.is_file():
        now = time.monotonic()
        if now - start > timeout_s:
            raise TimeoutError(
                f"colour bins: waited {timeout_s:.0f} s for rank 0 to write {path}. Do all ranks see the same "
                "paths.cache_dir? Fit the bins once beforehand (tools/fit_colour_bins.py) and pass colour_bins.path=..."
            )
        if now - last_note > 60:
            log.info("colour bins: still waiting for %s (%.0f s)", path, now - start)
            last_note = now
        time.sleep(poll_s)


def prepare_colour_bins(cfg: DictConfig, datamodule) -> Path:
    """Find (or fit and save) the colour-bin artefact; writes its path into ``cfg.colour_bins.path``.

    With ``colour_bins.path: null`` the artefact is ``<cache_dir>/colour_bins/k<K>-<data fingerprint>.npz``,
    so each data set gets its own bins, fitted once. Resuming from a checkpoint whose bins file is
    gone restores the file from the checkpoint. Under multi-process training only rank 0 fits or
    restores the file; the other ranks wait for it (``colour_bins.wait_s``) and load it.
    """
    path = colour_bins_path(cfg, datamodule)
    if not path.is_file() and launch_rank() != 0:
        wait_for_colour_bins(path, timeout_s=float(cfg.colour_bins.get("wait_s", 7200)))
    if not path.is_file():
        if cfg.get("ckpt_path"):
            ckpt = torch.load(cfg.ckpt_path, map_location="cpu", weights_only=False, pickle_module=legacy_pickle)
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


def save_end_of_run(trainer: pl.Trainer, folder: Path, last: Path | None) -> Path:
    """``final.ckpt``: a copy of the ``last.ckpt`` that ``CheckpointOnStop`` wrote at the last step
    (kept when a resumed run later rewrites last.ckpt); saved directly when no such file was written
    (that callback switched off). Returns final.ckpt."""
    final = folder / "final.ckpt"
    if last is None or not last.is_file():
        trainer.save_checkpoint(final, weights_only=False)
        return final
    if trainer.is_global_zero:
        shutil.copyfile(last, final)
    trainer.strategy.barrier("corrflow.save_end_of_run")
    return final


def build_trainer(cfg: DictConfig) -> tuple[pl.Trainer, list[pl.Callback]]:
    """The configured callbacks (``CheckpointOnStop`` told this run's resume command), loggers and
    trainer (``precision=auto`` resolved and written back into ``cfg``). Shared by pretraining and
    fine-tuning."""
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    for cb in callbacks:
        if isinstance(cb, CheckpointOnStop) and cb.resume_command is None:
            cb.resume_command = resume_command()
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]
    with open_dict(cfg):
        cfg.trainer.precision = resolve_precision(cfg.trainer.get("precision", "auto"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return trainer, callbacks


def fit_and_finish(
    cfg: DictConfig, trainer: pl.Trainer, model: pl.LightningModule, datamodule, callbacks: list, *, ckpt_path: str | None
) -> tuple[dict[str, float], dict[str, Any]]:
    """``trainer.fit``, then ``final.ckpt`` unless Ctrl-C stopped the run (``CheckpointOnStop``).
    Shared by pretraining and fine-tuning. Returns (final metrics, the objects built)."""
    trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
    stop = next((cb for cb in callbacks if isinstance(cb, CheckpointOnStop)), None)
    interrupted = bool(stop is not None and stop.interrupted)
    final = None
    if not interrupted:
        final = save_end_of_run(trainer, Path(trainer.default_root_dir) / "checkpoints", stop.saved if stop else None)
        log.info("final checkpoint: %s (also last.ckpt)", final)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer, "final_ckpt": final, "interrupted": interrupted}
    return metrics, objects


def fit_logging_interval(trainer: pl.Trainer, datamodule) -> None:
    """Log at least once an epoch: on a small data set (the sample videos give 8 steps an epoch)
    ``trainer.log_every_n_steps`` is lowered to the steps in an epoch."""
    datamodule.setup("fit")
    per_epoch = len(datamodule.train_set) // (datamodule.batch_size * trainer.world_size)
    if 0 < per_epoch < trainer.log_every_n_steps:
        log.info("logging every %d steps (an epoch) instead of every %d", per_epoch, trainer.log_every_n_steps)
        trainer.log_every_n_steps = per_epoch


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train CorrFlow as configured. Returns (final metrics, the objects built).

    ``objects["interrupted"]`` is True when Ctrl-C stopped the run (``last.ckpt`` was saved at the
    step boundary and the resume command printed; no ``final.ckpt`` then).
    """
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path not found: {cfg.ckpt_path}")
    if cfg.get("ckpt_path") and (problem := not_a_checkpoint(cfg.ckpt_path)):
        raise ValueError(f"ckpt_path={cfg.ckpt_path} {problem}")
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    datamodule = hydra.utils.instantiate(cfg.data)
    prepare_colour_bins(cfg, datamodule)
    model = hydra.utils.instantiate(cfg.model)
    held_out = bool(getattr(datamodule, "has_val", False))
    if not held_out:  # no held-out split: no validation loop, nothing to rank checkpoints by
        with open_dict(cfg):
            cfg.trainer.limit_val_batches = 0
            if cfg.get("callbacks") and "best_checkpoint" in cfg.callbacks:
                cfg.callbacks.best_checkpoint = None
    trainer, callbacks = build_trainer(cfg)

    fit_logging_interval(trainer, datamodule)

    hparams = {"config": OmegaConf.to_container(cfg, resolve=True), "git_sha": git_sha()}
    for lg in trainer.loggers:
        lg.log_hyperparams(hparams)
    if cfg.get("ckpt_path"):
        log.info("resuming %s into %s (%s)", cfg.ckpt_path, trainer.default_root_dir, datetime.now().isoformat(timespec="seconds"))
    log.info("git %s; seed %s; output in %s", hparams["git_sha"], cfg.get("seed"), trainer.default_root_dir)

    if held_out and not cfg.get("ckpt_path") and cfg.get("monitor", {}).get("at_start", True):
        log.info("held-out monitor: scoring the untrained encoder before the first step")
        trainer.validate(model=model, datamodule=datamodule, verbose=False)
    return fit_and_finish(cfg, trainer, model, datamodule, callbacks, ckpt_path=cfg.get("ckpt_path"))
