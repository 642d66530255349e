"""A run resumed in the middle of an epoch shows that epoch's number on its progress bar (and how
far into the epoch it is), not Lightning's bare "Training: 4/?"."""

from __future__ import annotations

import shutil
from pathlib import Path

from pytorch_lightning.callbacks import TQDMProgressBar

from corrflow.lit.progress import EpochProgressBar
from corrflow.train import train

BAR = "callbacks.progress_bar._target_={}"


def bar_of(objects) -> TQDMProgressBar:
    return objects["trainer"].progress_bar_callback


def test_a_resumed_mid_epoch_bar_shows_the_epoch(tiny_train_cfg, tmp_path):
    """3 steps an epoch (6 clips, 2 a batch): stopped after step 4, epoch 1 is resumed at its second batch."""
    first = tiny_train_cfg("trainer.max_steps=4", BAR.format("corrflow.lit.progress.EpochProgressBar"))
    _, objects = train(first)
    assert bar_of(objects).train_progress_bar.desc.startswith("Epoch 1")  # an ordinary run: Lightning's own label
    last = tmp_path / "step4.ckpt"  # each resumed run below rewrites the run's own last.ckpt
    shutil.copyfile(Path(first.paths.output_dir) / "checkpoints" / "last.ckpt", last)

    plain = tiny_train_cfg(f"ckpt_path={last}", "trainer.max_steps=5", BAR.format("pytorch_lightning.callbacks.TQDMProgressBar"))
    _, objects = train(plain)
    assert type(bar_of(objects)) is TQDMProgressBar
    assert bar_of(objects).train_progress_bar.desc.startswith("Training")  # why EpochProgressBar exists

    resumed = tiny_train_cfg(f"ckpt_path={last}", "trainer.max_steps=5", BAR.format("corrflow.lit.progress.EpochProgressBar"))
    _, objects = train(resumed)
    bar = bar_of(objects)
    assert isinstance(bar, EpochProgressBar) and objects["trainer"].global_step == 5
    assert bar.train_progress_bar.desc.startswith("Epoch 1"), bar.train_progress_bar.desc
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (2, 3)  # the epoch's 2nd batch of 3 done
