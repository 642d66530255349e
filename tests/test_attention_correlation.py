"""``local_correlation`` against the float64 dense reference (interior, borders, frames smaller
than the window or a tile), its offset order, the precision rule, and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from corrflow.attention import local_correlation, restricted_attention, window_offsets, window_validity
from corrflow.attention.reference import local_correlation_reference
from tests.helpers.run_if import requires_cuda

# (B, C, H, W), radius, tile
CASES = {
    "small": ((2, 5, 9, 11), 2, 8),
    "radius7_wider_than_frame": ((1, 4, 6, 13), 7, 8),
    "odd_tile": ((1, 3, 10, 7), 3, 3),
    "radius0": ((1, 4, 5, 6), 0, 8),
}


def _pair(shape, *, seed=0, dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(*shape, generator=g, dtype=dtype), torch.randn(*shape, generator=g, dtype=dtype)
    return q.requires_grad_(requires_grad), k.requires_grad_(requires_grad)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("outside", [-math.inf, 0.0])
def test_matches_dense_reference_float64(case: str, outside: float) -> None:
    shape, radius, tile = CASES[case]
    q, k = _pair(shape)
    got = local_correlation(q, k, radius=radius, outside=outside, tile=tile)
    want = local_correlation_reference(q, k, radius=radius, outside=outside)
    assert got.shape == (shape[0], (2 * radius + 1) ** 2, shape[2], shape[3])
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_offset_order_hand_case() -> None:
    """A one-hot key at (2, 3): the query at (y, x) sees it at offset (3 - x, 2 - y), whose
    channel is the one window_offsets lists."""
    h, w, radius = 5, 6, 2
    key = torch.zeros(1, 1, h, w, dtype=torch.float64)
    key[0, 0, 2, 3] = 1.0
    query = torch.ones(1, 1, h, w, dtype=torch.float64)
    corr = local_correlation(query, key, radius=radius, outside=0.0)
    offsets = window_offsets(radius, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            hit = (corr[0, :, y, x] == 1).nonzero().flatten().tolist()
            if abs(3 - x) <= radius and abs(2 - y) <= radius:
                assert len(hit) == 1 and offsets[hit[0]].tolist() == [3 - x, 2 - y]
            else:
                assert hit == []


def test_outside_marks_exactly_window_validity() -> None:
    q, k = _pair((1, 3, 7, 9))
    corr = local_correlation(q, k, radius=3)
    valid = window_validity(7, 9, 3).view(49, 7, 9)
    assert torch.equal(torch.isfinite(corr[0]), valid)


def test_softmax_of_volume_is_restricted_attention() -> None:
    """The volume's softmax over the window, applied to the key's unfolded values, is restricted
    attention with one reference: the same window logic."""
    q, k = _pair((1, 4, 8, 10))
    v = torch.randn(1, 1, 2, 8, 10, dtype=torch.float64)
    corr = local_correlation(q, k, radius=2)
    attn = torch.softmax(corr, dim=1)  # (1, 25, H, W)
    unf = torch.nn.functional.unfold(v[:, 0], kernel_size=5, padding=2).view(1, 2, 25, 8, 10)
    out = (attn[:, None] * unf).sum(2)
    torch.testing.assert_close(out, restricted_attention(q, k[:, None], v, radius=2, backend="reference"))


# Logits of ~400 (features of norm 20 along a shared direction, as in a smooth region of a trained
# encoder's features): float32 gets them to ~1e-4 (measured 7e-5), bf16's spacing there is 2, so a
# bf16 matmul is off by up to a unit or two (measured 2.4). The tolerance sits between the two.
LOGIT_ATOL = 2e-3


def _big_logit_pair(shape, *, seed=0, norm=20.0, spread=0.5):
    b, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(c, generator=g, dtype=torch.float64)
    base = base / base.norm() * norm
    noise = lambda: spread * torch.randn(b, c, h, w, generator=g, dtype=torch.float64)  # noqa: E731
    return base.view(1, c, 1, 1) + noise(), base.view(1, c, 1, 1) + noise()


def test_float32_and_bfloat16_autocast_follow_the_precision_rule() -> None:
    """float32 inputs, with or without bf16 autocast, and bf16 inputs under autocast: float32
    logits equal to the float64 reference of the same input values within LOGIT_ATOL, which a bf16
    computation of logits of ~400 misses by ~1000x."""
    q, k = _big_logit_pair((1, 8, 6, 7))
    want = local_correlation_reference(q, k, radius=2)
    inside = torch.isfinite(want)
    assert 300 < want[inside].min() and want[inside].max() < 500  # where bf16's spacing is 2
    q16, k16 = q.bfloat16(), k.bfloat16()
    want16 = local_correlation_reference(q16.double(), k16.double(), radius=2)  # the rounded inputs, exactly
    got32 = local_correlation(q.float(), k.float(), radius=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_ac = local_correlation(q.float(), k.float(), radius=2)
        got_ac16 = local_correlation(q16, k16, radius=2)
    for name, got, ref in (("float32", got32, want), ("autocast", got_ac, want), ("autocast, bf16 in", got_ac16, want16)):
        assert got.dtype == torch.float32, name
        assert torch.equal(torch.isfinite(got), inside), name
        torch.testing.assert_close(got[inside].double(), ref[inside], rtol=0, atol=LOGIT_ATOL, msg=lambda m, n=name: f"{n}: {m}")


def test_gradients_match_reference() -> None:
    q, k = _pair((1, 3, 6, 7), requires_grad=True)
    w = torch.randn(1, 25, 6, 7, dtype=torch.float64)
    (local_correlation(q, k, radius=2, outside=0.0) * w).sum().backward()
    gq, gk = q.grad.clone(), k.grad.clone()
    q.grad = k.grad = None
    (local_correlation_reference(q, k, radius=2, outside=0.0) * w).sum().backward()
    torch.testing.assert_close(gq, q.grad)
    torch.testing.assert_close(gk, k.grad)


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match="both be"):
        local_correlation(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5), radius=1)
    with pytest.raises(ValueError, match="radius"):
        local_correlation(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), radius=-1)


@requires_cuda
def test_cuda_matches_reference() -> None:
    q, k = _pair((2, 16, 30, 41))
    want = local_correlation_reference(q, k, radius=7)
    got = local_correlation(q.float().cuda(), k.float().cuda(), radius=7).double().cpu()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
