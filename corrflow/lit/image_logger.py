"""``ColourisationImageLogger``: every N steps, a picture of what the model sees and predicts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

log = logging.getLogger(__name__)


def colourisation_panel(out: dict, quantizer, *, max_clips: int = 4) -> torch.Tensor:
    """A (3, H', W') image: per clip, rows of input frames, encoder inputs (bottlenecked), target
    colours (the quantised colours on each frame's lightness) and predicted colours (frame 0 shows
    its ground truth, the reference)."""
    frames = out["frames"][:max_clips].float()  # (B, T, 3, H, W)
    b, t, _, h, w = frames.shape
    labels = out["labels"][:max_clips]
    k = quantizer.n_bins
    rows = []
    for i in range(b):
        clip = frames[i]
        target = torch.stack(
            [quantizer.to_rgb(clip[j : j + 1], F.one_hot(labels[i, j], k).permute(2, 0, 1)[None].float())[0] for j in range(t)]
        )
        preds = [target[0]]
        for j in range(1, t):
            p = F.interpolate(out[f"pred_{j}"][i : i + 1].float(), size=(h, w), mode="bilinear", align_corners=False)
            preds.append(quantizer.to_rgb(clip[j : j + 1], p)[0])
        rows += [clip, out["inputs"][i].float().clamp(0, 1), target, torch.stack(preds)]
    return make_grid(torch.cat(rows).cpu(), nrow=t, padding=2, pad_value=1.0)


class ColourisationImageLogger(pl.Callback):
    """Save (and send to the logger, if it takes images) a colourisation panel every ``every_n_steps``.

    Rows per clip: input frames, bottlenecked inputs, target colours, predicted colours.
    """

    def __init__(self, *, every_n_steps: int = 500, max_clips: int = 4, dirname: str = "images") -> None:
        self.every_n_steps, self.max_clips, self.dirname = every_n_steps, max_clips, dirname

    @rank_zero_only
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps <= 0 or (step != 1 and step % self.every_n_steps != 0) or not hasattr(pl_module, "_last_out"):
            return
        with torch.no_grad():
            panel = colourisation_panel(pl_module._last_out, pl_module.quantizer, max_clips=self.max_clips)
        folder = Path(trainer.default_root_dir) / self.dirname
        folder.mkdir(parents=True, exist_ok=True)
        save_image(panel, folder / f"colourisation_step{step:07d}.png")
        for logger in trainer.loggers:
            caption = "rows per clip: frames, bottlenecked inputs, target colours, predicted colours"
            if hasattr(logger, "log_image"):  # wandb
                logger.log_image(key="train/colourisation", images=[panel], step=step, caption=[caption])
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # tensorboard
                logger.experiment.add_image("train/colourisation", panel, global_step=step)
