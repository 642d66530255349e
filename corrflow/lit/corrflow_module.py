"""``CorrFlowLitModule``: CorrFlow pretraining as a LightningModule."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor

from corrflow.lit.schedules import SampleMilestoneLR
from corrflow.models.bottleneck import ColourBottleneck
from corrflow.models.checkpoint import encoder_payload
from corrflow.models.corrflow import CorrFlow
from corrflow.models.quantizer import ColourQuantizer
from corrflow.propagation.heldout import HeldOutPropagation
from corrflow.utils.schedules import linear_schedule
from corrflow.utils.seeding import derive_seed, seeded_cpu_rng

log = logging.getLogger(__name__)


class CorrFlowLitModule(pl.LightningModule):
    """
    Args:
        net: the CorrFlow model.
        quantizer: the colour bins (its centroids are saved in checkpoints).
        bottleneck: the encoder-input bottleneck (training only).
        optimizer: a partial optimizer taking the parameters (Adam, lr 2e-4).
        batch_size: clips per step per device (turns the milestones' samples into steps).
        lr_milestones: training samples after which the LR is multiplied by ``lr_gamma``.
        lr_gamma: 0.5 (halved) in the paper.
        p_gt_start, p_gt_end: scheduled sampling, the probability of a ground-truth reference,
            linear over the whole run (0.9 -> 0.6).
        cycle_weight: weight of the cycle losses (0.1).
        seed: the run's seed. A training step's random draws (colour dropout and jitter, the
            scheduled-sampling coins) come from a stream derived from (seed, rank, global step):
            a resumed run draws what the uninterrupted run would, and DDP ranks draw differently.
        monitor: the held-out monitor (optional): how the encoder's features are judged on
            sequences the run does not train on (label propagation under a protocol, scored with
            the DAVIS rules). It runs on the datamodule's validation set (``data.val_root``), at
            Lightning's validation points (``trainer.val_check_interval`` steps) and before the
            first step; without a validation set it never runs.
        monitor_dir: where each validation's predictions (``results/``, the latest) and scores
            (``step<N>/*.csv``) go.
    Logged: ``train/loss``, ``train/loss_rec``, ``train/loss_cycle`` and their parts,
    ``train/p_gt``, ``train/skipped_videos`` (per epoch) and the learning rate; with the monitor,
    ``val/J&F``, ``val/J``, ``val/F`` and ``val/seconds`` (the validation's wall time).
    """

    def __init__(
        self,
        *,
        net: CorrFlow,
        quantizer: ColourQuantizer,
        bottleneck: ColourBottleneck,
        optimizer: Callable[..., torch.optim.Optimizer] = partial(torch.optim.Adam, lr=2e-4, betas=(0.9, 0.999)),
        batch_size: int = 6,
        lr_milestones: Sequence[int] = (400_000, 600_000, 800_000, 1_000_000),
        lr_gamma: float = 0.5,
        p_gt_start: float = 0.9,
        p_gt_end: float = 0.6,
        cycle_weight: float = 0.1,
        seed: int | None = 0,
        monitor: HeldOutPropagation | None = None,
        monitor_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "quantizer", "bottleneck", "optimizer", "monitor"], logger=False)
        self.monitor, self.monitor_dir = monitor, Path(monitor_dir) if monitor_dir else None
        self.net, self.quantizer, self.bottleneck, self.optimizer_factory = net, quantizer, bottleneck, optimizer
        if quantizer.n_bins != net.n_bins:
            raise ValueError(f"the colour bins have {quantizer.n_bins} centroids but the model predicts {net.n_bins}")
        self._skipped = 0

    # -- schedules -------------------------------------------------------------------------
    def total_steps(self) -> int:
        try:
            return int(self.trainer.estimated_stepping_batches)
        except Exception:  # noqa: BLE001 - no trainer attached (e.g. used outside fit)
            return 1

    def p_gt(self) -> float:
        """Scheduled-sampling probability at the current step (derived from the step: resumable)."""
        return linear_schedule(self.global_step, self.total_steps(), start=self.hparams.p_gt_start, end=self.hparams.p_gt_end)

    # -- steps -----------------------------------------------------------------------------
    def step_seed(self) -> int:
        """The seed of this step's random draws: a function of (seed, rank, global step) only."""
        return derive_seed(self.hparams.seed or 0, "train-step", self.global_rank, self.global_step)

    def model_step(self, batch: dict, *, train: bool) -> dict[str, Tensor]:
        frames = batch["frames"]  # (B, T, 3, H, W)
        b, t = frames.shape[:2]
        labels = self.quantizer(frames.flatten(0, 1)).view(b, t, *frames.shape[-2:])
        with seeded_cpu_rng(self.step_seed()) as rng:  # bottleneck draws use torch's CPU generator
            inputs = self.bottleneck(frames) if train else frames
            p = self.p_gt()
            use_gt = [rng.random() < p for _ in range(max(t - 2, 0))]
        out = self.net(inputs, labels, use_gt=use_gt, cycle_weight=self.hparams.cycle_weight)
        out["labels"], out["inputs"], out["use_gt"] = labels, inputs, use_gt
        return out

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        out = self.model_step(batch, train=True)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}: the run stops here, before this "
                "step's update. The last good checkpoint is the newest one in the run's checkpoints/ folder; resume "
                "with ckpt_path=<it>, perhaps with a lower model.optimizer.lr or trainer.precision=32-true"
            )
        self._skipped += int(batch["skipped"].sum()) if "skipped" in batch else 0
        logs = {f"train/{k}": v for k, v in out.items() if k.startswith("loss_")}
        logs["train/p_gt"] = torch.tensor(self.p_gt())
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=False, batch_size=batch["frames"].shape[0])
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=batch["frames"].shape[0])
        self._last_out = {k: out[k] for k in ("inputs", "labels") if k in out} | {
            k: v for k, v in out.items() if k.startswith("pred_")
        }
        self._last_out["frames"] = batch["frames"].detach()
        self._last_use_gt = out["use_gt"]
        return loss

    def on_train_epoch_end(self) -> None:
        skipped = torch.tensor(float(self._skipped), device=self.device)
        if self.trainer.world_size > 1:
            skipped = self.all_gather(skipped).sum()
        self.log("train/skipped_videos", skipped, on_step=False, on_epoch=True, sync_dist=False)
        if skipped > 0:
            log.warning("epoch %d: %d clips could not be read and were replaced (files named above)", self.current_epoch, int(skipped))
        self._skipped = 0

    # -- the held-out monitor ----------------------------------------------------------------
    def _monitor_results(self) -> Path:
        base = self.monitor_dir or Path(self.trainer.default_root_dir) / "heldout"
        return base / "results"

    def _skip_validation(self) -> bool:
        """A run stopping early (Ctrl-C, ``trainer.should_stop``) makes Lightning validate once more
        before it ends: not a scheduled point of the monitor, and minutes before the prompt."""
        return bool(self.trainer.training or self.trainer.state.fn == "fit") and self.trainer.should_stop

    def on_validation_epoch_start(self) -> None:
        self._val_skipped = self._skip_validation()
        if self.monitor is None or self._val_skipped:
            return
        if self.trainer.is_global_zero:
            HeldOutPropagation.clear(self._monitor_results())
        self.trainer.strategy.barrier("corrflow.heldout.start")
        self._val_started = time.perf_counter()

    def validation_step(self, index, batch_idx: int) -> None:
        """Propagate the first mask of held-out video ``index`` (of the datamodule's ``val_set``)
        with the encoder as it is now (eval mode)."""
        if self.monitor is None:
            raise RuntimeError("a validation set was given (data.val_root) but the model has no monitor (model.monitor)")
        if self._val_skipped:
            return
        video = self.trainer.datamodule.val_set[int(index)]
        self.monitor.propagate(self.net.encoder, video, self._monitor_results())

    def on_validation_epoch_end(self) -> None:
        """Score every held-out video (each rank wrote its share) and log ``val/J&F``, ``val/J``, ``val/F``."""
        if self.monitor is None or self.trainer.sanity_checking or getattr(self, "_val_skipped", False):
            return
        self.trainer.strategy.barrier("corrflow.heldout.end")
        dataset = self.trainer.datamodule.val_set
        results = self._monitor_results()
        scores = self.monitor.score(dataset, results, output_dir=results.parent / f"step{self.global_step:07d}")
        values = {"val/J&F": scores.jf_mean, "val/J": scores.j_mean, "val/F": scores.f_mean}
        values["val/seconds"] = time.perf_counter() - getattr(self, "_val_started", time.perf_counter())
        # for the callbacks (best.ckpt) and the progress bar; the loggers get them at the step count
        # itself (Lightning would log a validation inside the fit loop one step early)
        self.log_dict({k: torch.tensor(float(v)) for k, v in values.items()}, on_step=False, on_epoch=True, sync_dist=False, logger=False)
        if self.trainer.is_global_zero:
            for logger in self.loggers:
                logger.log_metrics({k: float(v) for k, v in values.items()}, step=self.global_step)
        log.info(
            "held-out J&F %.3f (J %.3f, F %.3f) at step %d, %s protocol, %d sequences, %.0f s",
            values["val/J&F"], values["val/J"], values["val/F"], self.global_step, self.monitor.name, len(dataset), values["val/seconds"],
        )  # fmt: skip

    # -- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        accumulate = getattr(self.trainer, "accumulate_grad_batches", 1) if self._trainer is not None else 1
        world = self.trainer.world_size if self._trainer is not None else 1
        samples_per_step = self.hparams.batch_size * world * accumulate
        lr_lambda = SampleMilestoneLR(samples_per_step=samples_per_step, milestones=self.hparams.lr_milestones, gamma=self.hparams.lr_gamma)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # -- checkpoints -----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        payload = encoder_payload(self.net.encoder, prefix="net.encoder.")
        payload["colour_bins"] = self.quantizer.centroids.detach().cpu().tolist()
        payload["stride"] = self.net.encoder.stride
        checkpoint["corrflow"] = payload
