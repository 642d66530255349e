"""FlexAttention's frame-size buckets: the bucket rule, the block mask built for padded frames,
exact results for frame sizes that are not bucket multiples, and one compile per bucket.

The eager FlexAttention path (the CPU default) applies the mask densely and ignores the block
mask, so the block mask is checked on its own against the mask it summarises, and the compiled
forward (which uses it) runs on the CPU where a C++ compiler is present.
"""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from corrflow.attention import flex as flex_module
from corrflow.attention import restricted_attention
from corrflow.attention.flex import bucket_size, neighbourhood_block_mask, restricted_attention_flex
from tests.helpers.run_if import requires_cuda

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

needs_cxx = pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on the CPU needs a C++ compiler")

# Three frame sizes in a row, none a bucket multiple, all in the (16, 16) bucket. B = 1, R = 3,
# C = 5, D = 3, radius 2, temperature 0.5, as tests/test_attention_backends.py's compiled case,
# so one compiled CPU kernel serves them all.
SIZES_ONE_BUCKET = [(9, 13), (12, 7), (15, 16)]


def _inputs(h, w, *, b=1, r=3, c=5, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, c, h, w, generator=g, dtype=torch.float64),
        torch.randn(b, r, c, h, w, generator=g, dtype=torch.float64),
        torch.randn(b, r, d, h, w, generator=g, dtype=torch.float64),
    )


@pytest.mark.parametrize(
    "n, bucket",
    [(1, 16), (16, 16), (17, 32), (48, 48), (60, 64), (64, 64), (65, 80), (80, 80), (81, 96), (107, 112),
     (112, 112), (120, 128), (128, 128), (129, 160), (214, 224), (256, 256), (257, 320), (480, 512)],
)  # fmt: skip
def test_bucket_size_hand_cases(n: int, bucket: int) -> None:
    assert bucket_size(n) == bucket


def test_bucket_size_properties() -> None:
    sizes = range(1, 1025)
    buckets = [bucket_size(n) for n in sizes]
    for n, b in zip(sizes, buckets):
        assert b >= n and b % 16 == 0
        assert b - n < max(16, n / 4), (n, b)  # under 16 cells, or under 25 %
    assert sorted({b for b in buckets if 64 < b <= 128}) == [80, 96, 112, 128]  # four an octave
    assert len(set(buckets)) == 4 + 4 * 4  # 16..64 by 16, then four per octave up to 1024
    with pytest.raises(ValueError, match="at least 1"):
        bucket_size(0)


@pytest.mark.parametrize("h, w, r, radius", [(9, 13, 3, 2), (7, 9, 2, 6), (17, 5, 1, 3), (16, 16, 2, 0), (30, 33, 2, 4), (40, 70, 2, 1)])
def test_block_mask_lists_exactly_the_blocks_with_an_allowed_pair(h: int, w: int, r: int, radius: int) -> None:
    """Against the element mask itself (its mask_mod over the whole padded grid), reduced per
    128 x 128 block; and the mask_mod against the window rule written out on the real frame."""
    from torch.nn.attention.flex_attention import create_mask

    bm = neighbourhood_block_mask(h, w, r, radius, "cpu")
    hp, wp = bucket_size(h), bucket_size(w)
    dense = create_mask(bm.mask_mod, 1, 1, hp * wp, r * hp * wp, "cpu")[0, 0]  # (HWp, R*HWp)
    blocks = dense.view(hp * wp // 128, 128, r * hp * wp // 128, 128).any(3).any(1)
    assert torch.equal(bm.to_dense()[0, 0].bool(), blocks)
    # Real targets: exactly the in-frame window of every reference.
    yy, xx = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    real = (yy < h) & (xx < w)
    near = ((yy[:, None] - yy[None]).abs() <= radius) & ((xx[:, None] - xx[None]).abs() <= radius)
    want = (near & real[None]).repeat(1, r)
    assert torch.equal(dense[real], want[real])
    assert dense[~real].any(1).all()  # padded targets (cropped later) never have an empty row


@pytest.mark.parametrize("radius", [2, 6])
def test_eager_flex_exact_for_sizes_in_a_row(radius: int) -> None:
    """Several frame sizes through the (eager) flex path, padding and masking exercised."""
    for i, (h, w) in enumerate([*SIZES_ONE_BUCKET, (17, 30), (5, 5), (33, 20)]):
        q, k, v = _inputs(h, w, seed=i)
        want = restricted_attention(q, k, v, radius=radius, temperature=0.5, backend="reference")
        got = restricted_attention(q, k, v, radius=radius, temperature=0.5, backend="flex")
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=lambda m, s=(h, w): f"{s}: {m}")


def _frames_compiled() -> tuple[int, int]:
    """(frames dynamo tried to compile, frames it compiled): past its recompile limit a frame
    counts as tried but not compiled, and runs eagerly from then on."""
    from torch._dynamo.utils import counters

    return counters["frames"]["total"], counters["frames"]["ok"]


def _delta(before: tuple[int, int]) -> tuple[int, int]:
    return tuple(a - b for a, b in zip(_frames_compiled(), before))


@needs_cxx
def test_compiled_flex_three_sizes_one_compile(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three frame sizes in a row through the compiled forward: exact, and compiled at most once
    (none if this process compiled the bucket already), logged once."""
    monkeypatch.setattr(flex_module, "_compiled_shapes", set())
    counts = []
    with caplog.at_level(logging.INFO, logger="corrflow.attention.flex"):
        for i, (h, w) in enumerate(SIZES_ONE_BUCKET):
            q, k, v = _inputs(h, w, seed=10 + i)
            want = restricted_attention(q, k, v, radius=2, temperature=0.5, backend="reference")
            before = _frames_compiled()
            got = restricted_attention_flex(q.float(), k.float(), v.float(), radius=2, temperature=0.5, compiled=True)
            counts.append(_delta(before))
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5, msg=lambda m, s=(h, w): f"{s}: {m}")
    assert counts[0] in [(0, 0), (1, 1)] and counts[1:] == [(0, 0), (0, 0)], counts
    logged = [r.getMessage() for r in caplog.records if r.name == "corrflow.attention.flex"]
    assert len(logged) == 1 and "(1, 3, 16, 16, 16, 16, 2," in logged[0], logged


@pytest.mark.slow
@needs_cxx
def test_compiled_flex_new_bucket_compiles_past_dynamo_recompile_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """With torch's recompile limit at 1, a second bucket is still compiled (the flex backend
    raises the limit to MAX_COMPILED_SHAPES for its calls) instead of falling back to eager."""
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    for i, (h, w) in enumerate([(9, 13), (20, 13)]):  # buckets (16, 16) and (32, 16)
        q, k, v = _inputs(h, w, seed=40 + i)
        before = _frames_compiled()
        got = restricted_attention_flex(q.float(), k.float(), v.float(), radius=2, temperature=0.5, compiled=True)
        tried, compiled = _delta(before)
        assert tried == compiled, (h, w, tried, compiled)
        want = restricted_attention(q, k, v, radius=2, temperature=0.5, backend="reference")
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert compiled == 1  # the second bucket was new to this process


# ---- GPU: compile counts and exactness where flex is the default -----------------------------


@pytest.mark.gpu
@requires_cuda
def test_cuda_flex_compiles_once_per_bucket() -> None:
    """480p-like grids (60x107 at stride 8 and neighbours in its 64x112 bucket), then a 720p-like
    one (90x160, another bucket): one compile each, results exact against float64, and no
    fall-back to the dense eager path (which would also be exact, so the count is what tells)."""
    torch._dynamo.reset()
    counts = []
    for i, (h, w) in enumerate([(60, 107), (57, 100), (64, 112), (90, 160)]):
        q, k, v = (t.cuda() for t in _inputs(h, w, r=2, c=64, d=16, seed=20 + i))
        want = restricted_attention(q, k, v, radius=6, temperature=1.0, backend="reference")
        before = _frames_compiled()
        got = restricted_attention(q.float(), k.float(), v.float(), radius=6, temperature=1.0, backend="flex")
        counts.append(_delta(before))
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4, msg=lambda m, s=(h, w): f"{s}: {m}")
    assert counts == [(1, 1), (0, 0), (0, 0), (1, 1)], counts


@pytest.mark.gpu
@requires_cuda
def test_cuda_flex_training_step_sizes_in_a_row_compile_once() -> None:
    """Forward and backward (bf16 autocast, the training path) for three sizes in one bucket:
    gradients against float64, one compile."""
    torch._dynamo.reset()
    counts = []
    for i, (h, w) in enumerate([(30, 30), (32, 29), (25, 32)]):
        leaves = [t.cuda().float().requires_grad_() for t in _inputs(h, w, b=2, r=1, c=64, d=16, seed=30 + i)]
        refs = [t.detach().double().requires_grad_() for t in leaves]
        before = _frames_compiled()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = restricted_attention(*leaves, radius=6, temperature=1.0, backend="flex")
        grad = torch.randn_like(out)
        got = torch.autograd.grad(out, leaves, grad)
        counts.append(_delta(before))
        want = torch.autograd.grad(restricted_attention(*refs, radius=6, temperature=1.0, backend="reference"), refs, grad.double())
        for name, a, b in zip("qkv", got, want):
            torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"d{n}: {m}")
    assert counts == [(1, 1), (0, 0), (0, 0)], counts
