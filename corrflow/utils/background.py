"""Work beside the main loop: a reader that prepares the next items while the current one is
computed, and a writer that saves results in order while the next ones are computed.

On a CPU the affinities keep every core busy in PyTorch's own threads, which release the GIL; the
decoding of the next frame (PIL) and the writing of the last one (label resizing, PNG encoding) fit
in their gaps. Both keep their order, bound how far they run ahead, and hand any exception to the
main loop at the next call (so a corrupt frame still stops the run with its own error).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["OrderedWriter", "prefetch"]

T = TypeVar("T")
_END = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate over ``items`` with a thread producing up to ``depth`` of them ahead.

    The items come in order; an exception raised while producing one is raised here when the loop
    reaches it. Leaving the loop early (``break``, an exception, Ctrl-C) stops the thread after the
    item it is producing. ``depth <= 0`` iterates in this thread.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(x: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for x in items:
                if not put((x, None)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put((_END, e))
            return
        put((_END, None))

    thread = threading.Thread(target=produce, name="corrflow-reader", daemon=True)
    thread.start()
    try:
        while True:
            x, err = q.get()
            if x is _END:
                if err is not None:
                    raise err
                return
            yield x
    finally:
        stop.set()


class OrderedWriter:
    """Runs ``fn(*args)`` calls in one background thread, in the order submitted.

    At most ``max_pending`` calls wait at a time (:meth:`submit` blocks on the oldest beyond that,
    which bounds the memory the pending predictions hold). The first exception of a call is raised by
    the next :meth:`submit` or by :meth:`close`; calls after a failed one are not run.
    ``max_pending <= 0`` runs each call at once, in this thread. Use as a context manager: leaving
    the block waits for every call (and raises its exception), unless an exception is already leaving.
    """

    def __init__(self, max_pending: int = 4) -> None:
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corrflow-writer") if max_pending > 0 else None
        self._pending: list[Future] = []
        self._failed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._pool is None:
            fn(*args)
            return
        self._reap(block=len(self._pending) >= self.max_pending)
        self._pending.append(self._pool.submit(self._guarded, fn, *args))

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._failed:  # an earlier call failed: its error is what the caller sees
            return None
        try:
            return fn(*args)
        except BaseException:
            self._failed = True
            raise

    def _reap(self, *, block: bool) -> None:
        while self._pending and (self._pending[0].done() or block):
            self._pending.pop(0).result()  # raises the call's exception
            block = False

    def close(self, *, wait: bool = True) -> None:
        """Wait for every call (raising the first exception), then stop the thread."""
        if self._pool is None:
            return
        try:
            if wait:
                while self._pending:
                    self._pending.pop(0).result()
        finally:
            for f in self._pending:
                f.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True)

    def __enter__(self) -> OrderedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(wait=exc_type is None)
