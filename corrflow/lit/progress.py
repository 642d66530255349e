"""``EpochProgressBar``: Lightning's tqdm bar, labelled with the epoch also in a resumed run.

A run resumed from a checkpoint written in the middle of an epoch (``last.ckpt`` after Ctrl-C, or
any periodic one) does not start that epoch again, so Lightning does not call
``on_train_epoch_start``, where its bar gets its "Epoch N" label and its length: the bar reads
"Training: 4/?" for the rest of that epoch. This bar sets both at the first batch instead, with
the batches already done counted in (``Epoch 3: 5/8``).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import convert_inf

__all__ = ["EpochProgressBar"]


class EpochProgressBar(TQDMProgressBar):
    """:class:`~pytorch_lightning.callbacks.TQDMProgressBar` (same arguments) that labels a resumed
    epoch's bar too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch_labelled = False

    def on_train_start(self, *args: Any) -> None:
        super().on_train_start(*args)
        self._epoch_labelled = False

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._epoch_labelled = True

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        if self._epoch_labelled:
            return
        self._epoch_labelled = True  # resumed mid-epoch: Lightning skipped on_train_epoch_start
        bar = self.train_progress_bar
        bar.reset(total=convert_inf(self.total_train_batches))
        bar.initial = bar.n = batch_idx  # the batches of this epoch done before the resume
        bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """A run that ends by an exception (a NaN loss, Ctrl-C's abort) closes its bars now, so that
        no half-drawn bar is printed later, when the interpreter exits."""
        super().on_exception(trainer, pl_module, exception)
        for name in ("_train_progress_bar", "_val_progress_bar", "_test_progress_bar", "_predict_progress_bar"):
            bar = getattr(self, name, None)
            if bar is not None:
                bar.close()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Also at the end of a run stopped early (``should_stop``), whose epoch never ended."""
        super().teardown(trainer, pl_module, stage)
        for name in ("_train_progress_bar", "_val_progress_bar"):
            bar = getattr(self, name, None)
            if bar is not None and not getattr(bar, "disable", True):
                bar.close()
