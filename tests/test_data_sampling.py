"""ResumableClipSampler: a (seed, epoch) order, split across ranks, resumable mid-epoch; per-item
draw seeds; and ClipDataset's random starts drawn from them."""

from __future__ import annotations

import pytest

from corrflow.data.pretraining.clips import ClipDataset
from corrflow.data.sampling import ResumableClipSampler
from corrflow.data.video.sources import discover_sources


def keys(sampler) -> list[tuple[int, int]]:
    return list(iter(sampler))


def test_order_is_a_function_of_seed_and_epoch():
    data = range(20)
    a = ResumableClipSampler(data, seed=1, batch_size=2, progress=lambda: (0, 0))
    b = ResumableClipSampler(data, seed=1, batch_size=2, progress=lambda: (0, 0))
    assert keys(a) == keys(b)
    assert sorted(i for i, _ in keys(a)) == list(range(20))
    assert [i for i, _ in keys(a)] != list(range(20))  # shuffled
    c = ResumableClipSampler(data, seed=1, batch_size=2, progress=lambda: (1, 0))
    d = ResumableClipSampler(data, seed=2, batch_size=2, progress=lambda: (0, 0))
    assert [i for i, _ in keys(c)] != [i for i, _ in keys(a)]  # another epoch, another order
    assert [i for i, _ in keys(d)] != [i for i, _ in keys(a)]  # another seed, another order


def test_resuming_skips_the_trained_batches_of_the_same_order():
    data = range(20)
    whole = keys(ResumableClipSampler(data, seed=3, batch_size=4, progress=lambda: (2, 0)))
    rest = keys(ResumableClipSampler(data, seed=3, batch_size=4, progress=lambda: (2, 3)))
    assert rest == whole[12:]  # 3 batches of 4 already trained: items and their draw seeds
    assert keys(ResumableClipSampler(data, seed=3, batch_size=4, progress=lambda: (2, 99))) == []


def test_ranks_share_out_the_epoch_and_draw_their_own_seeds():
    data = range(21)
    r0 = keys(ResumableClipSampler(data, num_replicas=2, rank=0, seed=5, batch_size=2, progress=lambda: (0, 0)))
    r1 = keys(ResumableClipSampler(data, num_replicas=2, rank=1, seed=5, batch_size=2, progress=lambda: (0, 0)))
    assert len(r0) == len(r1) == 10  # drop_last: an even split
    assert not {i for i, _ in r0} & {i for i, _ in r1}
    assert not {s for _, s in r0} & {s for _, s in r1}


def test_random_clip_starts_come_from_the_draw_seed(video_root):
    ds = ClipDataset(discover_sources(video_root), clip_len=2, frame_gap=2, size=(16, 16), sampling="random", clips_per_video=3, progress=False)
    first = ds[(0, 123)]["frames"]
    again = ds[(0, 123)]["frames"]
    assert (first == again).all()
    starts = {tuple(ds.clip_indices(0, __import__("random").Random(s))[1]) for s in range(20)}
    assert len(starts) > 1  # the seed matters
    with pytest.raises(IndexError):
        ds[(len(ds), 0)]
