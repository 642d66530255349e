"""LabelPropagator: identical features keep labels, the CRW context queue, arg-max feed-back,
bounded memory."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from corrflow.propagation import LabelPropagator, context_indices, onehot_argmax

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


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_a_2000_frame_video_propagates_in_constant_memory() -> None:
    prop = LabelPropagator(PoolFeatures(), **{**CRW, "radius": 2})
    g = torch.Generator().manual_seed(0)
    prop.step(torch.rand(3, 16, 16, generator=g), random_labels(3, 8, 8))
    rss = []
    for t in range(1, 2000):
        prop.step(torch.rand(3, 16, 16, generator=g))
        if t in (300, 1999):
            rss.append(_rss_bytes())
    assert len(prop.context) == 21
    assert rss[1] - rss[0] < 32 * 2**20  # no growth with the video length (allocator noise aside)
