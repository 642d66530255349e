"""The reader and writer threads beside propagation: order, bounded look-ahead, errors raised
where the loop is, nothing run after a failure; and the same predictions through the tool."""

from __future__ import annotations

import threading
import time

import pytest

from corrflow.utils.background import OrderedWriter, prefetch


def test_prefetch_keeps_order_and_runs_ahead_at_most_depth() -> None:
    produced: list[int] = []

    def items():
        for i in range(20):
            produced.append(i)
            yield i

    seen = []
    for x in prefetch(items(), depth=3):
        time.sleep(0.005)  # the consumer is slower: the reader fills its queue
        seen.append(x)
        # produced ahead: the queue (3) plus the one waiting to be put
        assert len(produced) - len(seen) <= 3 + 1
    assert seen == list(range(20))


def test_prefetch_raises_the_readers_error_where_the_loop_reaches_it() -> None:
    def items():
        yield 0
        yield 1
        raise OSError("frame 2 is corrupt")

    seen = []
    with pytest.raises(OSError, match="frame 2 is corrupt"):
        for x in prefetch(items(), depth=2):
            seen.append(x)
    assert seen == [0, 1]  # the frames before the bad one were all delivered first


def test_prefetch_stops_its_thread_when_the_loop_is_left() -> None:
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i

    for x in prefetch(items(), depth=2):
        if x == 3:
            break
    time.sleep(0.3)
    n = len(produced)
    time.sleep(0.2)
    assert len(produced) == n <= 3 + 2 + 2  # stopped: nothing more produced
    assert not any(t.name == "corrflow-reader" and t.is_alive() for t in threading.enumerate())


def test_prefetch_depth_0_reads_in_this_thread() -> None:
    where = []

    def items():
        for i in range(3):
            where.append(threading.current_thread())
            yield i

    assert list(prefetch(items(), depth=0)) == [0, 1, 2]
    assert set(where) == {threading.current_thread()}


@pytest.mark.parametrize("max_pending", [0, 1, 4])
def test_writer_runs_calls_in_order_and_bounds_what_waits(max_pending: int) -> None:
    done: list[int] = []
    waiting_max = [0]
    w = OrderedWriter(max_pending=max_pending)

    def write(i: int) -> None:
        time.sleep(0.002 * (i % 3))  # uneven work
        done.append(i)

    for i in range(30):
        w.submit(write, i)
        waiting_max[0] = max(waiting_max[0], len(w._pending))
    w.close()
    assert done == list(range(30))
    assert waiting_max[0] <= max_pending


def test_writer_raises_the_first_error_and_runs_nothing_after_it() -> None:
    done = []

    def write(i: int) -> None:
        if i == 2:
            raise ValueError("disk full at 2")
        time.sleep(0.01)
        done.append(i)

    with pytest.raises(ValueError, match="disk full at 2"):
        with OrderedWriter(max_pending=8) as w:
            for i in range(6):
                w.submit(write, i)
    assert done == [0, 1]  # nothing after the failed call was written


def test_writer_leaves_at_once_when_the_loop_failed() -> None:
    """An error in the propagation itself leaves the block without waiting for queued writes."""
    started = []

    def write(i: int) -> None:
        started.append(i)
        time.sleep(0.2)

    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="propagation failed"):
        with OrderedWriter(max_pending=8) as w:
            for i in range(8):
                w.submit(write, i)
            raise RuntimeError("propagation failed")
    assert time.perf_counter() - t0 < 0.2 * 3  # the running call finished; the queued were cancelled
    assert len(started) < 8
