"""``ColourisationImageLogger``: every N steps, a picture of what the model sees and predicts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

log = logging.getLogger(__name__)


ROW_LABELS = ("frames", "bottlenecked input", "target colours", "prediction")
PADDING = 2


def label_panel(grid: torch.Tensor, *, row_labels: list[str], col_labels: list[str], cell: tuple[int, int], padding: int = PADDING) -> torch.Tensor:
    """Add a column of row labels on the left and a row of column labels on top of a
    ``make_grid`` picture.

    Args:
        grid: (3, H, W) in [0, 1], ``len(row_labels)`` rows by ``len(col_labels)`` columns of
            ``cell`` = (h, w) images, ``padding`` pixels apart.
    Returns: (3, H + top, W + left) in [0, 1], white margins, black text.
    """
    h, w = cell
    try:  # a scalable font sized to the cells (Pillow >= 10.1), else Pillow's small bitmap font
        font = ImageFont.load_default(size=min(24, max(10, h // 14)))
    except TypeError:
        font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(probe.textbbox((0, 0), t, font=font)[2] for t in [*row_labels, *col_labels])
    text_h = max(probe.textbbox((0, 0), t, font=font)[3] for t in [*row_labels, *col_labels])
    left, top = text_w + 8, text_h + 6
    image = Image.fromarray((grid.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))
    canvas = Image.new("RGB", (image.width + left, image.height + top), "white")
    canvas.paste(image, (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(row_labels):
        y = top + padding + i * (h + padding) + h // 2 - text_h // 2
        draw.text((4, y), text, fill="black", font=font)
    for j, text in enumerate(col_labels):
        draw.text((left + padding + j * (w + padding), 2), text, fill="black", font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255.0


def colourisation_panel(out: dict, quantizer, *, max_clips: int = 4, annotate: bool = True) -> torch.Tensor:
    """A (3, H', W') image: per clip, rows of input frames, encoder inputs (bottlenecked), target
    colours (the quantised colours on each frame's lightness) and predicted colours (frame 0 shows
    its ground truth, the reference); with ``annotate``, rows and columns are named in the margins."""
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
    grid = make_grid(torch.cat(rows).cpu(), nrow=t, padding=PADDING, pad_value=1.0)
    if not annotate:
        return grid
    row_labels = [f"clip {i}: {name}" if b > 1 else name for i in range(b) for name in ROW_LABELS]
    col_labels = ["frame 0 (reference)", *(f"frame {j}" for j in range(1, t))]
    return label_panel(grid, row_labels=row_labels, col_labels=col_labels, cell=(h, w))


class ColourisationImageLogger(pl.Callback):
    """Save (and send to the logger, if it takes images) a colourisation panel at step 1, every
    ``every_n_steps`` and at the end of the run (so even a short run shows its trained model).

    Rows per clip: input frames, bottlenecked inputs, target colours, predicted colours; columns:
    the clip's frames (frame 0 is the reference). Labelled in the picture's margins.
    """

    def __init__(self, *, every_n_steps: int = 500, max_clips: int = 4, dirname: str = "images") -> None:
        self.every_n_steps, self.max_clips, self.dirname = every_n_steps, max_clips, dirname
        self._written: int | None = None  # the step of the newest picture

    @rank_zero_only
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps <= 0 or (step != 1 and step % self.every_n_steps != 0):
            return
        self.write(trainer, pl_module)

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_steps > 0 and self._written != trainer.global_step:
            self.write(trainer, pl_module)

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The panel of the newest training step, as ``images/colourisation_step<step>.png``."""
        if not hasattr(pl_module, "_last_out"):
            return
        step = trainer.global_step
        self._written = step
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
