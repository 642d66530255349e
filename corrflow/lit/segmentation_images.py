"""``SegmentationImageLogger``: every N steps, a picture of a segmenter's training clips: the
frames, their ground truth and the prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from corrflow.utils.overlay import blend_mask

__all__ = ["SegmentationImageLogger", "segmentation_panel"]

CAPTION = "rows per clip: frames, ground truth, prediction (the first frame shows the mask it was given)"


def segmentation_panel(pictures: dict, *, max_clips: int = 4) -> torch.Tensor:
    """A (3, H', W') image from ``pictures`` = {"frames": (B, T, 3, H, W) in [0, 1], "masks":
    (B, T, H, W) ids, "preds": (B, T, H, W) ids (frame 0: the given mask)}: per clip, a row of
    frames, a row with the ground truth over them and a row with the prediction over them."""
    frames = (pictures["frames"][:max_clips].float().clamp(0, 1) * 255).round().byte().permute(0, 1, 3, 4, 2).cpu().numpy()
    masks, preds = pictures["masks"][:max_clips].cpu().numpy(), pictures["preds"][:max_clips].cpu().numpy()
    rows = []
    for i in range(frames.shape[0]):
        rows.append(frames[i])
        rows.append(np.stack([blend_mask(f, m) for f, m in zip(frames[i], masks[i])]))
        rows.append(np.stack([blend_mask(f, m) for f, m in zip(frames[i], preds[i])]))
    tiles = torch.from_numpy(np.concatenate(rows)).permute(0, 3, 1, 2).float() / 255.0
    return make_grid(tiles, nrow=frames.shape[1], padding=2, pad_value=1.0)


class SegmentationImageLogger(pl.Callback):
    """Save ``images/segmentation_step<step>.png`` at step 1 and every ``every_n_steps``, and hand
    it to the loggers that take images (wandb, tensorboard) as ``train/segmentation``.

    Reads ``pl_module.last_pictures`` (see :func:`segmentation_panel`), which the segmenter module
    keeps from its last training step.
    """

    def __init__(self, *, every_n_steps: int = 500, max_clips: int = 4, dirname: str = "images") -> None:
        self.every_n_steps, self.max_clips, self.dirname = every_n_steps, max_clips, dirname

    @rank_zero_only
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        pictures = getattr(pl_module, "last_pictures", None)
        if self.every_n_steps <= 0 or pictures is None or (step != 1 and step % self.every_n_steps != 0):
            return
        panel = segmentation_panel(pictures, max_clips=self.max_clips)
        folder = Path(trainer.default_root_dir) / self.dirname
        folder.mkdir(parents=True, exist_ok=True)
        save_image(panel, folder / f"segmentation_step{step:07d}.png")
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # wandb
                logger.log_image(key="train/segmentation", images=[panel], step=step, caption=[CAPTION])
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # tensorboard
                logger.experiment.add_image("train/segmentation", panel, global_step=step)
