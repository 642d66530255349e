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


def test_float32_and_bfloat16_autocast_follow_the_precision_rule() -> None:
    q, k = _pair((1, 8, 6, 7))
    want = local_correlation_reference(q, k, radius=2)
    got32 = local_correlation(q.float(), k.float(), radius=2)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), want, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_ac = local_correlation(q.float(), k.float(), radius=2)
    assert got_ac.dtype == torch.float32


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
