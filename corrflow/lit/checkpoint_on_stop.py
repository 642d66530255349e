"""``CheckpointOnStop``: ``last.ckpt`` whenever training stops, and Ctrl-C as a clean stop.

``last.ckpt`` is written at the run's last step (``max_steps`` reached, or the last batch of the
last epoch) from inside that step's ``on_train_batch_end``, so it holds exactly the loop position
a periodic checkpoint would: resuming it with a larger budget continues the run as if it had never
stopped (same data order, same random draws).

Ctrl-C: the first SIGINT only sets a flag; the step in progress finishes, ``last.ckpt`` is
written, the run stops, and the exact command that resumes it is printed. A second Ctrl-C
interrupts at once (Lightning's own shutdown, nothing saved). DataLoader workers ignore SIGINT
(``corrflow.data.sampling.worker_init``), so the first Ctrl-C does not kill them under the run.

The acknowledgement ("Ctrl-C: finishing this step, then saving ...") is printed at once, not when
the step ends: Python runs a signal handler only between bytecodes of the main thread, which a step
spends inside long C++ calls (a backward pass can take many seconds on a CPU). So a watcher thread
blocks on the signal module's wake-up file descriptor, to which the C-level handler writes a byte
the moment the signal arrives, and prints the line from there. A second Ctrl-C pressed before the
main thread got to the handler still aborts (the handler sees that two arrived). Where another
user of the wake-up descriptor holds it (an asyncio loop in this thread), the line comes from the
handler alone, as before.
"""

from __future__ import annotations

import logging
import signal
import socket
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
        self._lock = threading.Lock()
        self._presses = 0  # SIGINTs the watcher has seen
        self._acknowledged = False
        self._wakeup: tuple[socket.socket, socket.socket] | None = None  # (read end, write end)
        self._watcher: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def request_stop(self, *_args) -> None:
        """The first SIGINT: stop after this step. The next SIGINT raises KeyboardInterrupt (also
        when it arrived before the main thread got here: the watcher counted it)."""
        again = self.interrupted
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.acknowledge()
        with self._lock:
            presses = self._presses
        if again or presses >= 2:
            raise KeyboardInterrupt

    def acknowledge(self) -> None:
        """Say, once, that Ctrl-C was heard and what happens now (from the watcher thread, at once,
        or from the handler)."""
        with self._lock:
            if self._acknowledged:
                return
            self._acknowledged = True
        log.warning("Ctrl-C: finishing this step, then saving %s (press Ctrl-C again to abort without saving)", self.path)

    def _start_watcher(self) -> None:
        """Take the signal module's wake-up descriptor (main thread only) and start the thread that
        acknowledges a Ctrl-C the moment it arrives. Leaves things as they were when another user
        holds the descriptor or the platform refuses."""
        read, write = socket.socketpair()
        write.setblocking(False)
        try:
            previous = signal.set_wakeup_fd(write.fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError):
            previous = None
        if previous != -1:  # refused, or someone else's (an asyncio loop): given back
            if previous is not None:
                signal.set_wakeup_fd(previous)
            read.close()
            write.close()
            return
        self._stopping.clear()
        self._wakeup = (read, write)
        self._watcher = threading.Thread(target=self._watch, args=(read,), name="corrflow-ctrl-c", daemon=True)
        self._watcher.start()

    def _watch(self, read: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                data = read.recv(64)  # one byte a signal, its number (0: _stop_watcher's wake-up)
            except OSError:
                return
            if not data:
                return
            presses = data.count(int(signal.SIGINT))
            if presses:
                with self._lock:
                    self._presses += presses
                self.acknowledge()

    def _stop_watcher(self) -> None:
        if self._wakeup is None:
            return
        read, write = self._wakeup
        self._wakeup = None
        if threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(-1)
        # Wake the watcher with a byte rather than by closing the write end: forked DataLoader
        # workers hold copies of it, so the watcher would not see end-of-file.
        self._stopping.set()
        try:
            write.send(b"\0")
        except OSError:
            pass
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        read.close()
        write.close()

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
            self._start_watcher()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not (self.interrupted or self.last_step(trainer)):
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state: what a resume needs
        self.saved = self.path
        if self.interrupted:
            trainer.should_stop = True
            command = (self.resume_command or "python tools/train.py ... ckpt_path={ckpt}").replace("{ckpt}", str(self.path))
            log.warning("stopped by Ctrl-C at step %d; checkpoint %s", trainer.global_step, self.path)
            if trainer.is_global_zero:
                print(f"\nstopped at step {trainer.global_step}; resume with:\n  {command}\n", flush=True)

    def _restore(self) -> None:
        self._stop_watcher()
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()
        if isinstance(exception, KeyboardInterrupt):
            log.warning("aborted without saving; the newest checkpoint in %s is where a resume starts", self.dirpath)
