"""Ctrl-C is acknowledged the moment it arrives, while the step still runs; the save still waits for
the step's end; a second Ctrl-C aborts; everything is put back afterwards."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest

from corrflow.lit.checkpoint_on_stop import CheckpointOnStop

pytestmark = pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="needs POSIX signal masks")

ACK = "Ctrl-C: finishing this step, then saving"


class Lines(logging.Handler):
    """Records the callback's log lines, with the time each arrived and the thread that wrote it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[float, str, str]] = []
        self.acknowledged = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), threading.current_thread().name, record.getMessage()))
        if record.getMessage().startswith(ACK):
            self.acknowledged.set()


@pytest.fixture
def lines():
    logger = logging.getLogger("corrflow.lit.checkpoint_on_stop")
    handler = Lines()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def started(tmp_path):
    """A CheckpointOnStop as training starts it (its handler and watcher in place), torn down after."""
    before = signal.getsignal(signal.SIGINT)
    stop = CheckpointOnStop(dirpath=str(tmp_path))
    stop.on_train_start(None, None)
    yield stop
    stop.on_train_end(None, None)
    signal.signal(signal.SIGINT, before)


def busy_step(seconds: float, *, sigint_at: tuple[float, ...]) -> float:
    """A training step as the main thread lives it: a long stretch in C++ (a backward pass) where
    Python runs no signal handler. Modelled by blocking SIGINT in this thread while it sleeps, so
    that Python's handler can only run once the step is over; Ctrl-C is pressed ``sigint_at``
    seconds in. Returns when the step ended (time.monotonic)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        for at in sigint_at:
            threading.Timer(at, os.kill, (os.getpid(), signal.SIGINT)).start()
        time.sleep(seconds)
        return time.monotonic()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_is_acknowledged_before_the_step_ends(started, lines):
    t0 = time.monotonic()
    step_end = busy_step(3.0, sigint_at=(0.2,))
    time.sleep(0.2)  # after the step: the main thread's handler runs now
    acks = [(t, thread, m) for t, thread, m in lines.records if m.startswith(ACK)]
    assert len(acks) == 1, lines.records  # once, not again from the handler
    when, thread, message = acks[0]
    assert when < step_end - 1.0, f"acknowledged {when - t0:.2f} s in, the step ended {step_end - t0:.2f} s in"
    assert thread != threading.main_thread().name and str(started.path) in message
    # the stop itself still happens at the step boundary, from the handler
    assert started.interrupted
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # a second Ctrl-C now aborts


def test_a_second_ctrl_c_during_the_step_aborts(started, lines):
    """Both presses land while the main thread is in the step: Python runs the handler once for
    the two, but the watcher counted them, so the handler aborts as the second press asks."""
    with pytest.raises(KeyboardInterrupt):
        busy_step(2.0, sigint_at=(0.2, 0.6))
        time.sleep(0.5)  # the handler runs as the step ends, and raises
    assert started._presses == 2 and lines.acknowledged.is_set()


def test_one_ctrl_c_on_an_idle_main_thread_is_acknowledged_once_and_stops(started, lines):
    os.kill(os.getpid(), signal.SIGINT)  # handled at once by the main thread, seen by the watcher too
    assert lines.acknowledged.wait(5)
    time.sleep(0.2)
    assert started.interrupted
    assert sum(m.startswith(ACK) for _, _, m in lines.records) == 1


def test_training_end_puts_everything_back(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    stop = CheckpointOnStop(dirpath=str(tmp_path))
    stop.on_train_start(None, None)
    watcher = stop._watcher
    assert watcher is not None and watcher.is_alive()
    assert signal.getsignal(signal.SIGINT) == stop.request_stop
    stop.on_train_end(None, None)
    assert not watcher.is_alive()
    assert signal.getsignal(signal.SIGINT) is before
    assert signal.set_wakeup_fd(-1) == -1  # the wake-up descriptor was given back


def test_without_the_wakeup_descriptor_the_handler_still_acknowledges(tmp_path, lines):
    """Someone else holds the wake-up descriptor (an asyncio loop): no watcher, the line comes from
    the handler, and the other's descriptor is left in place."""
    import socket

    mine, theirs = socket.socketpair()
    theirs.setblocking(False)
    signal.set_wakeup_fd(theirs.fileno())
    before = signal.getsignal(signal.SIGINT)
    stop = CheckpointOnStop(dirpath=str(tmp_path))
    try:
        stop.on_train_start(None, None)
        assert stop._watcher is None
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        assert stop.interrupted and lines.acknowledged.is_set()
        stop.on_train_end(None, None)
        assert signal.set_wakeup_fd(-1) == theirs.fileno()
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, before)
        mine.close()
        theirs.close()
