"""Pure propagation functions: the CRW context schedule, the mixed-context affinity against a
dense float64 reference, and the arg-max feed-back."""

from __future__ import annotations

import pytest
import torch

from corrflow.propagation.functional import context_indices, mixed_context_attention, onehot_argmax

pytestmark = pytest.mark.usefixtures("one_thread")



def dense_mixed_reference(q, k0, v0, keys, values, *, radius, temperature, topk):
    """Every candidate's logit written out: the first frame whole, recent frames masked to the
    radius (Chebyshev), exactly the top-k over all of them, one softmax. (B, D, H, W)."""
    b, c, h, w = q.shape
    r, d = keys.shape[1], v0.shape[1]
    qf = q.flatten(2).transpose(1, 2)  # (B, HW, C)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    near = ((yy[:, None] - yy[None]).abs() <= radius) & ((xx[:, None] - xx[None]).abs() <= radius)  # (HW, HW)
    logits = [qf @ k0.flatten(2) / temperature]
    vals = [v0.flatten(2).transpose(1, 2)]
    for i in range(r):
        logits.append((qf @ keys[:, i].flatten(2) / temperature).masked_fill(~near, float("-inf")))
        vals.append(values[:, i].flatten(2).transpose(1, 2))
    logits, vals = torch.cat(logits, -1), torch.cat(vals, 1)  # (B, HW, N), (B, N, D)
    if topk is not None and topk < logits.shape[-1]:
        top, idx = logits.topk(topk, dim=-1)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, top)
    return (logits.softmax(-1) @ vals).transpose(1, 2).reshape(b, d, h, w)


def test_context_indices_first_plus_recent_padded_with_frame_0() -> None:
    assert context_indices(1, n_recent=20) == [0] * 21
    assert context_indices(3, n_recent=4) == [0, 0, 0, 1, 2]
    assert context_indices(25, n_recent=20) == [0, *range(5, 25)]
    assert context_indices(5, n_recent=1, global_first=False) == [4]
    with pytest.raises(ValueError):
        context_indices(0, n_recent=3)


@pytest.mark.parametrize(
    "h, w, r, radius, tile, topk, max_logits",
    [
        (7, 11, 3, 2, 4, 5, 1 << 25),
        (9, 13, 2, 3, 8, 10, 1 << 25),
        (13, 9, 4, 1, 4, 10, 500),  # many chunks
        (6, 5, 0, 1, 3, 4, 1 << 25),  # first frame only
        (5, 6, 1, 0, 2, 3, 1 << 25),  # radius 0
        (9, 13, 2, 3, 8, None, 1 << 25),  # no top-k
    ],
)
def test_mixed_context_attention_matches_dense_reference(h, w, r, radius, tile, topk, max_logits) -> None:
    g = torch.Generator().manual_seed(h * 100 + w)
    q = torch.randn(2, 5, h, w, generator=g, dtype=torch.float64)
    k0 = torch.randn(2, 5, h, w, generator=g, dtype=torch.float64)
    v0 = torch.rand(2, 3, h, w, generator=g, dtype=torch.float64)
    keys = torch.randn(2, r, 5, h, w, generator=g, dtype=torch.float64)
    values = torch.rand(2, r, 3, h, w, generator=g, dtype=torch.float64)
    out = mixed_context_attention(
        q, k0, v0, keys, values, radius=radius, temperature=0.3, topk=topk, tile=tile, max_logits=max_logits
    )
    ref = dense_mixed_reference(q, k0, v0, keys, values, radius=radius, temperature=0.3, topk=topk)
    assert out.shape == (2, 3, h, w)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_mixed_context_radius_limits_recent_frames_not_the_first() -> None:
    """A perfect match 5 cells away is used from a recent frame only when the radius reaches it,
    and from the first frame always (the first frame is attended whole)."""
    h, w, c = 6, 6, 4
    q = torch.zeros(1, c, h, w, dtype=torch.float64)
    q[0, 0, 0, 0] = 1.0  # the target at (0, 0) looks for channel 0
    match = torch.zeros(1, c, h, w, dtype=torch.float64)
    match[0, 0, 5, 5] = 1.0  # found only at (5, 5)
    label = torch.zeros(1, 2, h, w, dtype=torch.float64)
    label[0, 0] = 1.0
    label[0, :, 5, 5] = torch.tensor([0.0, 1.0])  # (5, 5) carries label 1, the rest label 0
    blank_key, blank_label = torch.zeros_like(q), torch.zeros_like(label)
    blank_label[0, 0] = 1.0

    def label1_at_origin(first_key, first_label, radius):
        out = mixed_context_attention(
            q, first_key, first_label, match[:, None], label[:, None], radius=radius, temperature=0.01, topk=None
        )
        return out[0, 1, 0, 0].item()

    assert label1_at_origin(blank_key, blank_label, radius=4) == 0.0  # out of the window
    assert label1_at_origin(blank_key, blank_label, radius=5) > 0.99  # in the window
    assert label1_at_origin(match, label, radius=0) > 0.99  # the first frame: anywhere


def test_mixed_context_attention_checks_shapes() -> None:
    q = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="keys must be"):
        mixed_context_attention(q, q, torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 2, 4, 4), radius=1)


def test_onehot_argmax() -> None:
    soft = torch.tensor([[0.2, 0.7], [0.5, 0.1], [0.3, 0.2]]).view(1, 3, 1, 2)
    hard = onehot_argmax(soft)
    assert hard.shape == soft.shape and hard.dtype == soft.dtype
    assert hard[0, :, 0, 0].tolist() == [0.0, 1.0, 0.0] and hard[0, :, 0, 1].tolist() == [1.0, 0.0, 0.0]
