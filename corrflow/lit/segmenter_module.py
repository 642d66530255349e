"""LightningModules for the downstream segmenters, built around one
:class:`~corrflow.models.backbone.SegmentationBackbone` (``model.backbone`` in the configs, so
``model.backbone.init=<corrflow .ckpt>|random|imagenet`` is the same switch for every segmenter).

:class:`SegmenterLitModule` holds what every segmenter shares (the backbone, the net built around
it, the optimizer, the skipped-sample count, the checkpoint payload); :class:`STMLitModule` is
STM's training step, :class:`OSVOSLitModule` OSVOS's (the parent network, or its contour branch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from corrflow.losses.bootstrapped_ce import BootstrappedCrossEntropy
from corrflow.losses.class_balanced_bce import ClassBalancedBCE, deep_supervision_loss
from corrflow.models.backbone import SegmentationBackbone
from corrflow.models.segmenters.checkpoint import segmenter_payload
from corrflow.models.segmenters.functional import foreground_target, mask_boundaries
from corrflow.models.segmenters.osvos import OSVOSNet
from corrflow.models.segmenters.stm import STMSegmenter
from corrflow.utils.schedules import linear_schedule

log = logging.getLogger(__name__)

__all__ = ["OSVOSLitModule", "STMLitModule", "SegmenterLitModule"]


class SegmenterLitModule(pl.LightningModule):
    """
    Args:
        backbone: the backbone the segmenter is built on.
        net: a partial segmenter class, called as ``net(backbone=backbone)``.
        optimizer: a partial optimizer taking the parameters.

    Subclasses set ``kind`` (the checkpoint's ``corrflow.kind``) and write ``training_step``.
    Logged by every segmenter: ``train/skipped_samples`` per epoch.
    """

    kind = "segmenter"

    def __init__(
        self,
        *,
        backbone: SegmentationBackbone,
        net: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
    ) -> None:
        super().__init__()
        self.net = net(backbone=backbone)
        self.optimizer_factory = optimizer
        self._skipped = 0
        self.last_pictures: dict[str, Tensor] | None = None

    def check_loss(self, loss: Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}: the run stops here, before this "
                "step's update; resume from the newest checkpoint in the run's checkpoints/ folder with ckpt_path=<it>, "
                "perhaps with a lower model.optimizer.lr or trainer.precision=32-true"
            )

    def count_skipped(self, batch: dict) -> None:
        self._skipped += int(batch["skipped"].sum()) if "skipped" in batch else 0

    def on_train_epoch_end(self) -> None:
        skipped = torch.tensor(float(self._skipped), device=self.device)
        if self.trainer.world_size > 1:
            skipped = self.all_gather(skipped).sum()
        self.log("train/skipped_samples", skipped, on_step=False, on_epoch=True, sync_dist=False)
        if skipped > 0:
            log.warning("epoch %d: %d training samples could not be read and were replaced (files named above)", self.current_epoch, int(skipped))
        self._skipped = 0

    def configure_optimizers(self):
        return self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        payload = segmenter_payload(self.net, kind=self.kind, prefix="net.")
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        payload["stage"] = getattr(datamodule, "stage", None)  # 'static' or 'video': see corrflow.finetune
        checkpoint["corrflow"] = payload


def objects_onehot(masks: Tensor, n: int) -> Tensor:
    """(B, H, W) ids (1..n objects; 0 and 255 neither) -> (B, n, H, W) float one-hot masks."""
    ids = torch.arange(1, n + 1, device=masks.device).view(1, n, 1, 1)
    return (masks[:, None] == ids).float()


class STMLitModule(SegmenterLitModule):
    """STM training on 3-frame clips (``T`` frames in general): memorise frame 0 with its mask,
    segment frame 1, memorise frame 1 with the prediction's soft probabilities, segment frame 2,
    ...; the losses of the segmented frames are summed.

    Args:
        backbone, net, optimizer: see :class:`SegmenterLitModule` (Adam, lr 1e-5, as STM).
        loss: per-frame loss ``loss(logits, target, step=global_step)``: cross-entropy, or
            bootstrapped cross-entropy (``BootstrappedCrossEntropy(top_p < 1)``).

    Logged: ``train/loss`` (the sum), ``train/loss_<t>`` per segmented frame, ``train/iou`` (mean
    IoU of the predicted objects over the segmented frames), ``train/max_skip`` (video clips),
    ``train/skipped_samples``.
    """

    kind = "stm"

    def __init__(
        self,
        *,
        backbone: SegmentationBackbone,
        net: Callable[..., STMSegmenter] = STMSegmenter,
        loss: nn.Module | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] = partial(torch.optim.Adam, lr=1e-5),
    ) -> None:
        super().__init__(backbone=backbone, net=net, optimizer=optimizer)
        self.loss = loss if loss is not None else BootstrappedCrossEntropy()

    def model_step(self, batch: dict) -> dict[str, Tensor]:
        frames, masks = batch["frames"], batch["masks"]  # (B, T, 3, H, W), (B, T, H, W)
        b, t = frames.shape[:2]
        n = int(batch["n_objects"].max())
        valid = torch.arange(n, device=frames.device)[None] < batch["n_objects"][:, None]  # (B, N)
        key, value = self.net.encode_memory(frames[:, 0], objects_onehot(masks[:, 0], n), valid=valid)
        keys, values = [key], [value]
        out: dict[str, Tensor] = {}
        preds = [masks[:, 0]]
        ious = []
        for i in range(1, t):
            logits = self.net.segment(self.net.encode_query(frames[:, i]), torch.stack(keys, 2), torch.stack(values, 2), valid=valid)
            out[f"loss_{i}"] = self.loss(logits, masks[:, i], step=self.global_step)
            pred = logits.argmax(1)
            preds.append(pred)
            ious.append(mean_object_iou(pred, masks[:, i], valid))
            if i < t - 1:
                key, value = self.net.encode_memory(frames[:, i], logits.softmax(1)[:, 1:], valid=valid)
                keys.append(key)
                values.append(value)
        out["loss"] = sum(out[f"loss_{i}"] for i in range(1, t))
        out["iou"] = torch.stack(ious).mean()
        out["preds"] = torch.stack(preds, 1)
        return out

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        out = self.model_step(batch)
        loss = out["loss"]
        self.check_loss(loss)
        self.count_skipped(batch)
        bs = batch["frames"].shape[0]
        logs = {f"train/{k}": v.detach() for k, v in out.items() if k.startswith("loss_") or k == "iou"}
        if "max_skip" in batch:
            logs["train/max_skip"] = batch["max_skip"].float().max()
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=bs)
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=bs)
        self.last_pictures = {"frames": batch["frames"].detach(), "masks": batch["masks"].detach(), "preds": out["preds"].detach()}
        return loss


def mean_object_iou(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean IoU over the (sample, object) pairs that exist; void (255) pixels excluded. Objects
    absent from both maps count as 1. pred, target (B, H, W) ids; valid (B, N)."""
    keep = target != 255
    ious = []
    for k in range(valid.shape[1]):
        p, g = (pred == k + 1) & keep, (target == k + 1) & keep
        inter, union = (p & g).flatten(1).sum(1).float(), (p | g).flatten(1).sum(1).float()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        ious.append(iou[valid[:, k]])
    return torch.cat(ious).mean()


class OSVOSLitModule(SegmenterLitModule):
    """OSVOS's offline training on single annotated frames (``batch["frames"]`` (B, T, 3, H, W),
    ``batch["masks"]`` (B, T, H, W); the B * T frames are independent samples): the parent network
    (``target='mask'``: every object of a frame is foreground) or the contour branch
    (``target='contour'``: the boundaries of the frame's labels, :func:`mask_boundaries`).

    The loss is :func:`deep_supervision_loss`: ``w * sum(side losses) + fused loss`` with the side
    weight ``w`` falling linearly from 1 at step 0 to 0 at ``side_weight_steps`` (None: the whole
    run, ``trainer.estimated_stepping_batches``), as OSVOS's ``1 - epoch / n_epochs``.

    Args:
        backbone, net, optimizer: see :class:`SegmenterLitModule`.
        loss: per-output loss ``loss(logits (B, 1, H, W), target (B, H, W))``: class-balanced BCE.
        target: 'mask' (checkpoint kind ``osvos``) or 'contour' (kind ``osvos_contour``).
        contour_width: the boundary's depth on each side of an edge, pixels (target='contour').
        side_weight_steps: the side weight's ramp, optimizer steps.

    Logged: ``train/loss``, ``train/loss_fused``, ``train/loss_sides`` (unweighted), ``train/side_weight``,
    ``train/iou`` (fused output > 0 against the target), ``train/skipped_samples``.
    """

    TARGETS = {"mask": "osvos", "contour": "osvos_contour"}

    def __init__(
        self,
        *,
        backbone: SegmentationBackbone,
        net: Callable[..., OSVOSNet] = OSVOSNet,
        loss: nn.Module | None = None,
        target: str = "mask",
        contour_width: int = 1,
        side_weight_steps: int | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] = partial(torch.optim.Adam, lr=1e-4),
    ) -> None:
        if target not in self.TARGETS:
            raise ValueError(f"target must be one of {sorted(self.TARGETS)}, got {target!r}")
        super().__init__(backbone=backbone, net=net, optimizer=optimizer)
        self.kind = self.TARGETS[target]
        self.target, self.contour_width, self.side_weight_steps = target, contour_width, side_weight_steps
        self.loss = loss if loss is not None else ClassBalancedBCE()
        self._total_steps: int | None = None

    def side_weight(self) -> float:
        """The side outputs' weight at the current step: 1 -> 0 over ``side_weight_steps``."""
        total = self.side_weight_steps
        if total is None:
            if self._total_steps is None:
                try:
                    self._total_steps = int(self.trainer.estimated_stepping_batches)
                except Exception:  # noqa: BLE001 - not attached to a fitting trainer
                    self._total_steps = 1
            total = self._total_steps
        return linear_schedule(self.global_step, int(total), start=1.0, end=0.0)

    def targets(self, masks: Tensor) -> Tensor:
        """(B, H, W) ids -> (B, H, W) 0 / 1 / 255 targets of this branch."""
        if self.target == "contour":
            return mask_boundaries(masks, width=self.contour_width)
        return foreground_target(masks)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        frames, masks = batch["frames"].flatten(0, 1), batch["masks"].flatten(0, 1)  # (B*T, 3, H, W), (B*T, H, W)
        target = self.targets(masks)
        out = self.net(frames)
        weight = self.side_weight()
        losses = deep_supervision_loss(out.sides, out.fused, target, side_weight=weight, loss=self.loss)
        loss = losses["loss"]
        self.check_loss(loss)
        self.count_skipped(batch)
        pred = (out.fused[:, 0] > 0).long()
        valid = target != 255
        inter = ((pred == 1) & (target == 1) & valid).sum().float()
        union = (((pred == 1) | (target == 1)) & valid).sum().float()
        bs = frames.shape[0]
        self.log_dict(
            {"train/loss_fused": losses["loss_fused"].detach(), "train/loss_sides": losses["loss_sides"].detach(),
             "train/side_weight": torch.tensor(weight), "train/iou": inter / union.clamp(min=1)},
            on_step=True, on_epoch=False, batch_size=bs,
        )  # fmt: skip
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=bs)
        self.last_pictures = {"frames": frames[:, None].detach(), "masks": target[:, None].detach(), "preds": pred[:, None].detach()}
        return loss
