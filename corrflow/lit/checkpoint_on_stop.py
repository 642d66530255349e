"""``CheckpointOnStop``: ``last.ckpt`` whenever training stops, and Ctrl-C as a clean stop.

``last.ckpt`` is written at the run's last step (``max_steps`` reached, or the last batch of the
last epoch) from inside that step's ``on_train_batch_end``, so it holds exactly the loop position
a periodic checkpoint would: resuming it with a larger budget continues the run as if it had never
stopped (same data order, same random draws).

Ctrl-C: the first SIGINT only sets a flag; the step in progress finishes, ``last.ckpt`` is
written, the run stops, and the exact command that resumes it is printed. A second Ctrl-C
interrupts at once (Lightning's own shutdown, nothing saved). DataLoader workers ignore SIGINT
(``corrflow.data.sampling.worker_init``), so the first Ctrl-C does not kill them under the run.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class CheckpointOnStop(pl.Callback):
    """
    Args:
        dirpath: where ``filename`` is written (the run's checkpoints folder).
        filename: the checkpoint written when training stops.
        resume_command: the command printed after Ctrl-C; ``{ckpt}`` is replaced by the
            checkpoint path (``corrflow.train.train`` fills it in from the run's overrides).
    """

    def __init__(self, *, dirpath: str, filename: str = "last.ckpt", resume_command: str | None = None) -> None:
        self.dirpath, self.filename, self.resume_command = Path(dirpath), filename, resume_command
        self.interrupted = False  # Ctrl-C seen
        self.saved: Path | None = None  # the checkpoint written when training stopped
        self._previous = None

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def request_stop(self, *_args) -> None:
        """The first SIGINT: stop after this step. The next SIGINT raises KeyboardInterrupt."""
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log.warning("Ctrl-C: finishing this step, then saving %s (press Ctrl-C again to abort without saving)", self.path)

    @staticmethod
    def last_step(trainer: pl.Trainer) -> bool:
        """Whether the step that just ended is the run's last."""
        if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            return True
        max_epochs = trainer.max_epochs
        return bool(trainer.is_last_batch and max_epochs is not None and max_epochs > 0 and trainer.current_epoch + 1 >= max_epochs)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.saved = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self.request_stop)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not (self.interrupted or self.last_step(trainer)):
            return
        trainer.save_checkpoint(self.path)
        self.saved = self.path
        if self.interrupted:
            trainer.should_stop = True
            command = (self.resume_command or "python tools/train.py ... ckpt_path={ckpt}").replace("{ckpt}", str(self.path))
            log.warning("stopped by Ctrl-C at step %d; checkpoint %s", trainer.global_step, self.path)
            if trainer.is_global_zero:
                print(f"\nstopped at step {trainer.global_step}; resume with:\n  {command}\n", flush=True)

    def _restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()
        if isinstance(exception, KeyboardInterrupt):
            log.warning("aborted without saving; the newest checkpoint in %s is where a resume starts", self.dirpath)
