"""``ActionLitModule``: video classification training (MSNet: a TSM backbone with
MotionSqueeze) with top-1 / top-5 accuracy, on the segmenters' shared plumbing
(:class:`~corrflow.lit.segmenter_module.SegmenterLitModule`: optimizer, skipped-sample count,
non-finite-loss stop)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from corrflow.lit.segmenter_module import SegmenterLitModule
from corrflow.models.backbone import SegmentationBackbone
from corrflow.models.segmenters.checkpoint import FORMAT
from corrflow.utils.seeding import derive_seed, seeded_device_rng

__all__ = ["ActionLitModule", "topk_accuracy"]


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """Share of rows whose label is among the k highest logits (k capped at the class count).
    logits (B, K), labels (B,)."""
    k = min(k, logits.shape[-1])
    return (logits.topk(k, dim=-1).indices == labels[:, None]).any(-1).float().mean()


class ActionLitModule(SegmenterLitModule):
    """
    Args:
        backbone: the per-frame backbone (``model.backbone``: init random | imagenet | a corrflow checkpoint).
        net: a partial :class:`~corrflow.models.motion.video_classifier.VideoClassifier`, called with ``backbone``.
        optimizer: a partial optimizer.
        seed: the training steps' random draws (dropout) come from a stream derived from (seed,
            rank, global step), as pretraining's: a resumed run draws what the uninterrupted one
            would, and DDP ranks draw differently.

    Logged: ``train/loss``, ``train/top1``, ``val/loss``, ``val/top1``, ``val/top5`` (epoch means),
    ``train/skipped_samples``.
    """

    kind = "msnet"

    def __init__(
        self,
        *,
        backbone: SegmentationBackbone,
        net: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer] = partial(torch.optim.SGD, lr=0.01, momentum=0.9),
        seed: int | None = 0,
    ) -> None:
        super().__init__(backbone=backbone, net=net, optimizer=optimizer)
        self.last_pictures = None
        self.seed = seed

    def step_seed(self) -> int:
        """The seed of this training step's random draws: a function of (seed, rank, global step) only."""
        return derive_seed(self.seed or 0, "train-step", self.global_rank, self.global_step)

    def setup(self, stage: str) -> None:
        classes = getattr(getattr(self.trainer, "datamodule", None), "classes", None)
        n = self.net.config["n_classes"]
        if classes is not None and len(classes) != n:
            raise ValueError(f"the data has {len(classes)} class folders ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}) "
                             f"but model.net.n_classes={n}")  # fmt: skip

    def model_step(self, batch: dict) -> dict[str, Tensor]:
        logits = self.net(batch["frames"])  # (B, K)
        labels = batch["label"]
        return {"loss": F.cross_entropy(logits, labels), "top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5)}

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        with seeded_device_rng(self.step_seed(), self.device):  # the dropout masks
            out = self.model_step(batch)
        self.check_loss(out["loss"])
        self.count_skipped(batch)
        bs = batch["frames"].shape[0]
        self.log("train/loss", out["loss"].detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=bs)
        self.log("train/top1", out["top1"], on_step=True, on_epoch=True, batch_size=bs)
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.model_step(batch)
        bs = batch["frames"].shape[0]
        for k in ("loss", "top1", "top5"):
            self.log(f"val/{k}", out[k], on_step=False, on_epoch=True, prog_bar=k == "top1", batch_size=bs)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["corrflow"] = {"format": FORMAT, "kind": self.kind, "backbone": dict(self.net.backbone.config),
                                  "classifier": dict(self.net.config), "prefix": "net.", "stage": "video"}  # fmt: skip
