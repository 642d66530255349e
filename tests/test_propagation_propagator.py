"""LabelPropagator: identical features keep labels, the CRW context queue, arg-max feed-back,
bounded memory."""

from __future__ import annotations

import gc
from collections import deque

import pytest
import torch
from torch import nn

from corrflow.propagation import LabelPropagator, context_indices, onehot_argmax
from corrflow.propagation.functional import mixed_context_attention

CRW = dict(global_first=True, n_recent=20, radius=12, window="disc", temperature=0.05, topk=10, feedback="soft", normalize=True)
CORRFLOW = dict(global_first=False, n_recent=1, radius=6, window="square", temperature=1.0, topk=None, feedback="argmax", normalize=False)

pytestmark = pytest.mark.usefixtures("one_thread")



class PositionFeatures(nn.Module):
    """Each stride x stride cell gets its own one-hot feature, whatever the frame: identical
    features in every frame, each cell matching only itself."""

    def __init__(self, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        hh, ww = h // self.stride, w // self.stride
        return torch.eye(hh * ww).view(hh * ww, hh, ww)[None].expand(b, -1, -1, -1) * 30.0


class PoolFeatures(nn.Module):
    """The frame itself, average-pooled to the stride."""

    stride = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, 2)


def random_labels(d: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(d, h, w, generator=g) * 3, dim=0)


@pytest.mark.parametrize("protocol", [CRW, CORRFLOW], ids=["crw", "corrflow"])
def test_identical_features_propagate_labels_unchanged(protocol) -> None:
    prop = LabelPropagator(PositionFeatures(), **protocol)
    frame = torch.rand(3, 20, 28)  # grid 5 x 7
    labels = onehot_argmax(random_labels(3, 5, 7)[None])[0]
    assert torch.equal(prop.step(frame, labels), labels)
    for _ in range(4):
        pred = prop.step(frame)
        assert pred.shape == labels.shape
        torch.testing.assert_close(pred, labels, atol=1e-6, rtol=0)


def test_context_queue_is_first_plus_last_n_padded_with_frame_0() -> None:
    prop = LabelPropagator(PoolFeatures(), global_first=True, n_recent=3, radius=2, temperature=0.1, topk=4)
    frame = torch.rand(3, 8, 8)
    prop.step(frame, random_labels(2, 4, 4))
    for t in range(1, 8):
        assert prop.context_frames == context_indices(t, n_recent=3)
        prop.step(torch.rand(3, 8, 8))
    assert len(prop.context) == 4  # bounded by the context size, not the video length


def test_corrflow_feeds_back_the_argmax_and_crw_the_soft_prediction() -> None:
    frames = [torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    start = random_labels(3, 4, 4)
    for feedback in ("argmax", "soft"):
        prop = LabelPropagator(
            PoolFeatures(), global_first=False, n_recent=1, radius=1, window="square", temperature=0.5, topk=None, feedback=feedback
        )
        prop.step(frames[0], start)
        pred = prop.step(frames[1])
        assert not torch.equal(pred, onehot_argmax(pred[None])[0])  # the prediction itself is soft
        (index, stored), = prop.context
        assert index == 1
        expected = onehot_argmax(pred[None])[0] if feedback == "argmax" else pred
        torch.testing.assert_close(stored, expected)


def test_restarting_and_errors() -> None:
    prop = LabelPropagator(PoolFeatures(), **CORRFLOW)
    with pytest.raises(RuntimeError, match="needs its labels"):
        prop.step(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"mask must be \(D, 4, 4\)"):
        prop.step(torch.rand(3, 8, 8), torch.zeros(2, 3, 3))
    prop.step(torch.rand(3, 8, 8), random_labels(2, 4, 4))
    prop.step(torch.rand(3, 8, 8))
    prop.step(torch.rand(3, 8, 8), random_labels(2, 4, 4))  # a new video
    assert prop.context_frames == [0]
    with pytest.raises(ValueError, match="feedback"):
        LabelPropagator(PoolFeatures(), feedback="hard")


def test_frames_are_padded_to_the_stride() -> None:
    prop = LabelPropagator(PoolFeatures(), **CRW)
    pred0 = prop.step(torch.rand(3, 7, 9), random_labels(2, 4, 5))
    assert pred0.shape == (2, 4, 5)
    assert prop.step(torch.rand(3, 7, 9)).shape == (2, 4, 5)


class KeepsEveryFrame(LabelPropagator):
    """Negative control: a queue without a length bound. It still attends to the last
    ``n_recent`` frames only (so its predictions are unchanged), but every frame stays in memory."""

    def reset(self) -> None:
        super().reset()
        self._recent = deque()

    def _propagate(self, query: torch.Tensor) -> torch.Tensor:
        everything = self._recent
        self._recent = deque(list(everything)[-self.n_recent :])
        try:
            return super()._propagate(query)
        finally:
            self._recent = everything


class KeepsAHistory(LabelPropagator):
    """Negative control: a bounded queue, plus a side list of every frame's features and labels
    (the context stays 21 frames long; only the memory grows)."""

    def _remember(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        self.__dict__.setdefault("history", []).append((feats, labels))
        super()._remember(feats, labels)


def _storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and repeats counted once)."""
    storages = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _held_tensors(obj, seen=None):
    """Every tensor reachable from ``obj`` through attributes and containers."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _held_tensors(v, seen)
    elif isinstance(obj, (list, tuple, deque, set)):
        for v in obj:
            yield from _held_tensors(v, seen)
    elif isinstance(obj, nn.Module):
        yield from obj.state_dict().values()
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        yield from _held_tensors(vars(obj), seen)


def _live_tensors():
    """Every plain tensor the interpreter holds. ``type`` rather than ``isinstance``: lazy modules
    answer ``__class__`` with a warning; plain rather than subclasses: the fake tensors that
    ``torch.compile`` leaves in its caches have no data to measure."""
    gc.collect()
    return (o for o in gc.get_objects() if type(o) in (torch.Tensor, nn.Parameter) and o.layout == torch.strided)


def _memory_over_a_video(prop: LabelPropagator, *, n_frames: int, at: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """Feed a 16 x 16 video (an 8 x 8 grid, 3 labels); at the steps ``at`` measure the bytes of the
    tensors the propagator holds and of all live tensors."""
    g = torch.Generator().manual_seed(0)
    prop.step(torch.rand(3, 16, 16, generator=g), random_labels(3, 8, 8))
    held, live = [], []
    for t in range(1, n_frames):
        prop.step(torch.rand(3, 16, 16, generator=g))
        if t in at:
            held.append(_storage_bytes(_held_tensors(prop)))
            live.append(_storage_bytes(_live_tensors()))
    return held, live


@pytest.mark.parametrize(
    "propagator, bounded",
    [(LabelPropagator, True), (KeepsEveryFrame, False), (KeepsAHistory, False)],
    ids=["propagator", "control-unbounded-queue", "control-side-history"],
)
def test_a_2000_frame_video_propagates_in_constant_memory(propagator, bounded) -> None:
    """From step 100 to 2000 neither the propagator's tensors nor all live tensors grow; the two
    negative controls, which keep every frame, show the measurement sees a leak of that size."""
    prop = propagator(PoolFeatures(), **{**CRW, "radius": 2})
    held, live = _memory_over_a_video(prop, n_frames=2000, at=(100, 1000, 1999))
    frame_bytes = 2 * 3 * 8 * 8 * 4  # one frame's features (C = 3) and labels (D = 3), float32
    if bounded:
        assert len(prop.context) == 21
        # the first frame + 20 recent (and, laid out once, their 10 x 10 key and label regions), not the video
        region_bytes = 10 * 10 * (3 + 3) * 4
        assert held[0] <= 25 * frame_bytes + 21 * region_bytes
        assert held == [held[0]] * 3
        assert max(live) - live[0] < 10 * frame_bytes
    else:
        assert held[-1] - held[0] >= 1800 * frame_bytes
        assert live[-1] - live[0] >= 1800 * frame_bytes


def test_crw_regions_laid_out_once_give_the_same_predictions() -> None:
    """The CRW context reading each recent frame's regions laid out once (the default) predicts
    what cutting them afresh every frame predicts (``region_cache_mb=0``), through the padded start,
    frames leaving the queue and a restart; the cache holds only the frames in the context."""
    torch.manual_seed(0)
    feats = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AvgPool2d(2))
    feats.stride = 2
    frames = [torch.rand(3, 30, 38) for _ in range(9)]
    crw = dict(CRW, n_recent=4, radius=5)
    fast, slow = LabelPropagator(feats, **crw), LabelPropagator(feats, **crw, region_cache_mb=0)
    for start in (0, 3):  # the second pass restarts from frame 3
        first = random_labels(3, 15, 19, seed=start)
        fast.step(frames[start], first)
        slow.step(frames[start], first)
        for frame in frames[start + 1 :]:
            queue = sorted(i for i, _, _ in fast._recent)  # what this step reads
            a, b = fast.step(frame), slow.step(frame)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            assert sorted(fast._ring_frames) == queue  # the ring held the queue, the padded start's repeats included
        assert slow._ring is None


def test_first_stride_attends_the_pooled_first_frame() -> None:
    """first_stride=2 (protocol=crw_fast's): each step equals the CRW attention against the first
    frame's features average-pooled 2x2 (ceil: a partial last row/column averages what it holds)
    and re-normalised, its labels pooled alike, the recent frames whole; 1 is the protocol itself."""
    torch.manual_seed(0)
    feats = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AvgPool2d(2))
    feats.stride = 2
    frames = [torch.rand(3, 30, 38) for _ in range(6)]  # a 15 x 19 grid: odd, so the pooling has partial cells
    crw = dict(CRW, n_recent=3, radius=5)
    approx = LabelPropagator(feats, **crw, first_stride=2)
    first = random_labels(3, 15, 19, seed=1)
    approx.step(frames[0], first)
    f0 = approx.embed(frames[0])
    pooled = torch.zeros(1, 8, 8, 10)
    plabels = torch.zeros(1, 3, 8, 10)
    for y in range(8):  # the 2x2 blocks written out, the last row and column hold what is left
        for x in range(10):
            pooled[:, :, y, x] = f0[:, :, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].mean((2, 3))
            plabels[:, :, y, x] = first[None, :, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].mean((2, 3))
    pooled = torch.nn.functional.normalize(pooled, dim=1)
    recent = [(f0, first[None])] * 3
    for frame in frames[1:]:
        q = approx.embed(frame)
        keys = torch.stack([f[0] for f, _ in recent])[None]
        values = torch.stack([v[0] for _, v in recent])[None]
        expected = mixed_context_attention(q, pooled, plabels, keys, values, radius=5, temperature=CRW["temperature"], topk=CRW["topk"],
                                           window=CRW["window"])  # fmt: skip
        got = approx.step(frame)
        torch.testing.assert_close(got, expected[0], rtol=1e-5, atol=1e-6)
        recent = [*recent[1:], (q, got[None])]
    with pytest.raises(ValueError, match="first_stride"):
        LabelPropagator(feats, **dict(crw, global_first=False, window="square"), first_stride=2)
