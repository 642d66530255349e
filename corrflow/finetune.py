"""``finetune(cfg)``: the core of ``tools/finetune.py`` (downstream segmenters on a corrflow,
random or ImageNet backbone), callable from tests and notebooks. It mirrors
:func:`corrflow.train.train` and shares its helpers.

``ckpt_path`` takes a checkpoint of this segmenter (``corrflow.kind`` in the file):

- of the same training stage (the stage is the data module's: ``static`` images or ``video``
  clips): the run resumes (weights, optimizer, step count, and what derives from it);
- of the other stage (the usual case: STM's main training from its static-image pretraining):
  the weights are loaded and training starts afresh (new optimizer, step 0), which is what
  ``python tools/finetune.py experiment=stm ckpt_path=<stm_static final.ckpt>`` means.

A pretraining checkpoint there, or another segmenter's, is a clear error. A resumed run writes
into its own run folder (``conf/hydra/finetune.yaml``: the resolvers below), a run started from the
other stage's weights into a new one. Ctrl-C finishes the step, saves ``last.ckpt`` and prints
the command that resumes (``CheckpointOnStop``, as in pretraining).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from corrflow.models.backbone import load_state_exactly
from corrflow.models.checkpoint import read_checkpoint
from corrflow.models.segmenters.checkpoint import recorded_segmenter_config
from corrflow.train import (
    build_trainer,
    fit_and_finish,
    git_sha,
    resumed_run_dir,
)
from corrflow.utils.moved import current_path

log = logging.getLogger(__name__)

__all__ = ["finetune", "read_segmenter_checkpoint"]


def _same_stage_run(ckpt_path: str | None, data_target: str) -> Path | None:
    """The run folder of ``ckpt_path`` when that run's data module was ``data_target`` (a resume;
    a run saved before the package was laid out by domain names its data module by the old path)."""
    run = resumed_run_dir(ckpt_path)
    if run is None:
        return None
    try:
        saved = OmegaConf.load(run / ".hydra" / "config.yaml").data.get("_target_")
    except Exception:  # noqa: BLE001 - no readable config: treat as another run
        return None
    return run if current_path(saved) == current_path(data_target) else None


def register_resolvers() -> None:
    """``corrflow_finetune_run_dir`` and ``corrflow_finetune_config_subdir`` for conf/hydra/finetune.yaml:
    resuming a run of the same stage writes into its folder (its new config under
    ``.hydra/resumed-<time>/``); a checkpoint of the other stage starts a new folder."""
    resolvers = {
        "corrflow_finetune_run_dir": lambda ckpt, target, default: str(_same_stage_run(ckpt, target) or default),
        "corrflow_finetune_config_subdir": lambda ckpt, target, stamp: f".hydra/resumed-{stamp}" if _same_stage_run(ckpt, target) else ".hydra",
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


def read_segmenter_checkpoint(path: str | Path, *, kind: str) -> dict:
    """The checkpoint at ``path``, which must be a ``kind`` segmenter's.

    Raises:
        FileNotFoundError: no file. ValueError: unreadable, a pretraining checkpoint (saying how
        to start from it instead), another segmenter's, or not a corrflow checkpoint.
    """
    path = Path(path)
    return check_segmenter_kind(path, *read_checkpoint(path, what="ckpt_path"), kind=kind)


def check_segmenter_kind(path: Path, ckpt: dict, meta: dict | None, *, kind: str) -> dict:
    """``ckpt`` (read from ``path``, with its ``corrflow`` entry ``meta``) if it is a ``kind``
    segmenter's; the errors of :func:`read_segmenter_checkpoint` otherwise."""
    if meta is None:
        raise ValueError(f"ckpt_path={path} is not a corrflow checkpoint (no 'corrflow' entry)")
    found = meta.get("kind", "pretraining" if "encoder" in meta else None)
    if found == kind:
        return ckpt
    if found == "pretraining":
        raise ValueError(
            f"ckpt_path={path} is a corrflow pretraining checkpoint (tools/train.py); ckpt_path continues a {kind.upper()} run. "
            f"To start {kind.upper()} from its encoder, pass model.backbone.init={path}"
        )
    raise ValueError(f"ckpt_path={path} is a {str(found).upper()} checkpoint; this run trains {kind.upper()}")


def start_from(cfg: DictConfig, model: pl.LightningModule, datamodule: pl.LightningDataModule, loaded: tuple[dict, dict | None] | None) -> str | None:
    """Apply ``ckpt_path`` (``loaded``: its (checkpoint, corrflow entry), read once by
    :func:`finetune`): returns the checkpoint to resume from (same stage), or loads the weights of
    one from the other stage into ``model`` and returns None (see the module docstring)."""
    if loaded is None:
        return None
    ckpt = check_segmenter_kind(Path(cfg.ckpt_path), *loaded, kind=model.kind)
    saved, now = ckpt["corrflow"].get("stage"), getattr(datamodule, "stage", None)
    if saved == now:
        log.info("resuming %s (%s stage, step %s)", cfg.ckpt_path, now, ckpt.get("global_step"))
        return str(cfg.ckpt_path)
    load_state_exactly(model, ckpt["state_dict"], source=f"ckpt_path={cfg.ckpt_path}")
    log.info(
        "starting %s training from the weights of %s (a %s-stage run, step %s): new optimizer, step 0; "
        "model.backbone.init is overridden by them",
        now, cfg.ckpt_path, saved, ckpt.get("global_step"),
    )  # fmt: skip
    return None


def adopt_checkpoint_architecture(cfg: DictConfig, meta: dict | None) -> list[str]:
    """Make ``cfg.model`` build the network that ``ckpt_path`` holds (its weights replace the new
    ones anyway): the backbone's architecture (``arch`` and strides, with ``init=random``, so that
    neither the ImageNet weights nor the corrflow checkpoint of the first stage are needed again)
    and the segmenter's widths, from the checkpoint's ``corrflow`` record ``meta``. Without this, stage 2
    started from a Lite0 (or narrow) stage-1 checkpoint would build the config's default network
    and refuse the weights. Returns the ``key=value`` settings that changed (logged)."""
    if not meta or "model" not in cfg:
        return []
    changed: list[str] = []

    def adopt(node: DictConfig | None, prefix: str, values: dict, keys) -> None:
        if node is None:
            return
        for k in keys:
            if k in values and k in node and node[k] != values[k]:
                changed.append(f"{prefix}.{k}={values[k]}")
                node[k] = values[k]

    saved_bb = meta.get("backbone") or {}
    bb = cfg.model.get("backbone")
    if saved_bb and bb is not None:
        adopt(bb, "model.backbone", saved_bb, ("arch", "finest_stride", "min_stride", "max_stride"))
        if "init" in bb and bb.init != "random":
            changed.append("model.backbone.init=random (the checkpoint's weights are loaded)")
            bb.init = "random"
    saved_net = recorded_segmenter_config(meta) if meta.get("segmenter") else {}
    adopt(cfg.model.get("net"), "model.net", saved_net, list(saved_net))
    return changed


def finetune(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train a segmenter as configured. Returns (final metrics, the objects built);
    ``objects["interrupted"]``: Ctrl-C stopped the run (``last.ckpt`` saved, no ``final.ckpt``)."""
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path not found: {cfg.ckpt_path}")
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    loaded = read_checkpoint(cfg.ckpt_path, what="ckpt_path") if cfg.get("ckpt_path") else None  # read once
    changed = adopt_checkpoint_architecture(cfg, loaded[1] if loaded else None)
    if changed:
        log.info("ckpt_path=%s: building the network it holds: %s", cfg.ckpt_path, ", ".join(changed))
    model = hydra.utils.instantiate(cfg.model)
    resume = start_from(cfg, model, datamodule, loaded)
    trainer, callbacks = build_trainer(cfg)

    hparams = {"config": OmegaConf.to_container(cfg, resolve=True), "git_sha": git_sha()}
    for lg in trainer.loggers:
        lg.log_hyperparams(hparams)
    bb = model.net.backbone.config  # every segmenter and classifier exposes its (query) backbone
    arch = bb["arch"] if isinstance(bb["arch"], str) else f"ResNet (stride {model.net.backbone.stride})"
    log.info("git %s; seed %s; %s on a %s backbone, init=%s; output in %s", hparams["git_sha"], cfg.get("seed"), model.kind.upper(), arch,
             bb["init"], trainer.default_root_dir)

    return fit_and_finish(cfg, trainer, model, datamodule, callbacks, ckpt_path=resume)
