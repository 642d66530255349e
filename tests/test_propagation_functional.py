"""Pure propagation functions: the CRW context schedule, the mixed-context affinity against a
dense float64 reference, and the arg-max feed-back."""

from __future__ import annotations

import pytest
import torch

from corrflow.propagation.functional import (
    context_indices,
    frame_regions,
    mixed_context_attention,
    mixed_context_attention_regions,
    onehot_argmax,
    window_mask,
    window_reach,
)

pytestmark = pytest.mark.usefixtures("one_thread")



def dense_mixed_reference(q, k0, v0, keys, values, *, radius, temperature, topk, window="square"):
    """Every candidate's logit written out: the first frame whole, recent frames masked to the
    radius (Chebyshev <= radius, or Euclidean < radius for 'disc'), exactly the top-k over all of
    them, one softmax. (B, D, H, W)."""
    b, c, h, w = q.shape
    r, d = keys.shape[1], v0.shape[1]
    qf = q.flatten(2).transpose(1, 2)  # (B, HW, C)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    dy, dx = (yy[:, None] - yy[None]).double(), (xx[:, None] - xx[None]).double()  # (HW, HW)
    if window == "disc":
        near = (dy**2 + dx**2).sqrt() < radius
    else:
        near = (dy.abs() <= radius) & (dx.abs() <= radius)
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
    "h, w, r, radius, tile, topk, max_logits, window",
    [
        (7, 11, 3, 2, 4, 5, 1 << 25, "square"),
        (9, 13, 2, 3, 8, 10, 1 << 25, "square"),
        (13, 9, 4, 1, 4, 10, 500, "square"),  # many chunks
        (6, 5, 0, 1, 3, 4, 1 << 25, "square"),  # first frame only
        (5, 6, 1, 0, 2, 3, 1 << 25, "square"),  # radius 0
        (9, 13, 2, 3, 8, None, 1 << 25, "square"),  # no top-k
        (9, 13, 2, 4, 4, 10, 1 << 25, "disc"),
        (13, 9, 3, 3, 8, 10, 500, "disc"),  # many chunks
        (8, 10, 2, 5, 3, None, 1 << 25, "disc"),  # no top-k
        (5, 6, 2, 1, 2, 3, 1 << 25, "disc"),  # radius 1: the same location only
    ],
)
def test_mixed_context_attention_matches_dense_reference(h, w, r, radius, tile, topk, max_logits, window) -> None:
    g = torch.Generator().manual_seed(h * 100 + w)
    q = torch.randn(2, 5, h, w, generator=g, dtype=torch.float64)
    k0 = torch.randn(2, 5, h, w, generator=g, dtype=torch.float64)
    v0 = torch.rand(2, 3, h, w, generator=g, dtype=torch.float64)
    keys = torch.randn(2, r, 5, h, w, generator=g, dtype=torch.float64)
    values = torch.rand(2, r, 3, h, w, generator=g, dtype=torch.float64)
    out = mixed_context_attention(
        q, k0, v0, keys, values, radius=radius, temperature=0.3, topk=topk, tile=tile, max_logits=max_logits, window=window
    )
    ref = dense_mixed_reference(q, k0, v0, keys, values, radius=radius, temperature=0.3, topk=topk, window=window)
    assert out.shape == (2, 3, h, w)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "h, w, r, radius, tile, topk, max_logits, window",
    [
        (7, 11, 3, 2, 4, 5, 1 << 25, "square"),
        (9, 13, 2, 4, 4, 10, 1 << 25, "disc"),
        (13, 9, 3, 3, 8, 10, 500, "disc"),  # many chunks
        (19, 23, 4, 12, 8, 10, 1 << 25, "disc"),  # CRW's radius, regions wider than the frame
        (6, 5, 0, 1, 3, 4, 1 << 25, "square"),  # first frame only
        (5, 6, 2, 1, 2, 3, 1 << 25, "disc"),  # radius 1: the same location only
    ],
)
def test_regions_laid_out_once_match_dense_reference(h, w, r, radius, tile, topk, max_logits, window) -> None:
    """The region path keeps the same candidates and top-k as every logit written out (float64, no
    ties), also when the padded start fills two slots with one frame, whatever the slots' order."""
    g = torch.Generator().manual_seed(h * 100 + w + 7)
    q = torch.randn(2, 5, h, w, generator=g, dtype=torch.float64)
    k0 = torch.randn(2, 5, h, w, generator=g, dtype=torch.float64)
    v0 = torch.rand(2, 3, h, w, generator=g, dtype=torch.float64)
    keys = torch.randn(2, r, 5, h, w, generator=g, dtype=torch.float64)
    values = torch.rand(2, r, 3, h, w, generator=g, dtype=torch.float64)
    if r >= 3:  # a padded start: frames 0 and 1 are one frame
        keys[:, 1], values[:, 1] = keys[:, 0], values[:, 0]
    order = list(reversed(range(r)))  # the ring's slots in any order
    def ring(x):  # (B, R, C, h, w) -> (B, nT, R, U, C), R may be 0
        if not x.shape[1]:
            return frame_regions(x.new_zeros(x.shape[0], x.shape[2], h, w), radius, tile, window)[:, :, None][:, :, :0]
        return torch.stack([frame_regions(f, radius, tile, window) for f in x.unbind(1)], dim=2)

    kr, vr = ring(keys[:, order]), ring(values[:, order])
    out = mixed_context_attention_regions(
        q, k0, v0, kr, vr, radius=radius, temperature=0.3, topk=topk, tile=tile, window=window, max_logits=max_logits,
    )  # fmt: skip
    ref = dense_mixed_reference(q, k0, v0, keys, values, radius=radius, temperature=0.3, topk=topk, window=window)
    assert out.shape == (2, 3, h, w)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="regions"):
        mixed_context_attention_regions(q, k0, v0, kr[:, :, :, 1:], vr[:, :, :, 1:], radius=radius, temperature=0.3,
                                        topk=topk, tile=tile, window=window)  # fmt: skip


def test_region_keys_are_the_union_of_the_tile_windows() -> None:
    """CRW's radius-12 disc over 8 x 8 tiles: the region's 900 keys less the corners no query
    reaches; counted by hand from the distances, not from the code's own mask."""
    from corrflow.propagation.functional import region_keys

    keep = region_keys(12, 8, "disc")
    s, reach = 30, 11
    expected = 0
    for ky in range(s):
        for kx in range(s):
            y, x = ky - reach, kx - reach  # key position in tile coordinates
            dy = 0 if 0 <= y < 8 else (y if y < 0 else y - 7)  # to the nearest query row of the tile
            dx = 0 if 0 <= x < 8 else (x if x < 0 else x - 7)
            expected += dy * dy + dx * dx < 144
    assert len(keep) == expected == 808
    assert len(region_keys(3, 4, "square")) == (4 + 6) ** 2  # a square window reaches its whole region


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("topk, window", [(None, "square"), (10, "disc")])
def test_mixed_context_attention_under_bf16_autocast_is_float32_accurate(input_dtype, topk, window) -> None:
    """Raw dot products of ~20-norm features (logits ~400, neighbours a few units apart, as the
    CorrFlow protocol's temperature-1 affinity): under bf16 autocast the logits and softmax are
    float32, so the result matches the float64 dense reference of the same input values."""
    h, w, r, c = 9, 11, 2, 16
    g = torch.Generator().manual_seed(11)
    base = torch.randn(c, generator=g, dtype=torch.float64)
    base = 20 * base / base.norm()
    feats = [base.view(1, c, 1, 1) + 0.1 * torch.randn(1, c, h, w, generator=g, dtype=torch.float64) for _ in range(2 + r)]
    q, k0, keys = feats[0], feats[1], torch.stack(feats[2:], 1)
    v0 = torch.rand(1, 3, h, w, generator=g, dtype=torch.float64).softmax(1)
    values = torch.rand(1, r, 3, h, w, generator=g, dtype=torch.float64).softmax(2)
    q, k0, v0, keys, values = (t.to(input_dtype) for t in (q, k0, v0, keys, values))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mixed_context_attention(q, k0, v0, keys, values, radius=3, temperature=1.0, topk=topk, tile=4, window=window)
    ref = dense_mixed_reference(*(t.double() for t in (q, k0, v0, keys, values)), radius=3, temperature=1.0, topk=topk, window=window)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)


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


def test_disc_window_is_crw_round_mask() -> None:
    """'disc' keeps offsets strictly closer than the radius: at radius 12 that is 437 offsets of
    the 625 of the 25 x 25 square, reaching 11 cells along an axis (CRW's MaskedAttention)."""
    allowed = window_mask(40, 40, 12, 1, range(20, 21), "cpu", "disc")  # the tile (1x1) at row 20, every column
    assert allowed.shape == (40, 1, 23 * 23)
    assert int(allowed[20].sum()) == 437  # an interior query
    assert window_reach(12, "disc") == 11 and window_reach(12, "square") == 12
    square = window_mask(40, 40, 12, 1, range(20, 21), "cpu", "square")
    assert int(square[20].sum()) == 625
    with pytest.raises(ValueError, match="radius >= 1"):
        window_reach(0, "disc")
    with pytest.raises(ValueError, match="window must be"):
        window_reach(3, "round")


def test_mixed_context_attention_checks_shapes() -> None:
    q = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="keys must be"):
        mixed_context_attention(q, q, torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 2, 4, 4), radius=1)


def test_onehot_argmax() -> None:
    soft = torch.tensor([[0.2, 0.7], [0.5, 0.1], [0.3, 0.2]]).view(1, 3, 1, 2)
    hard = onehot_argmax(soft)
    assert hard.shape == soft.shape and hard.dtype == soft.dtype
    assert hard[0, :, 0, 0].tolist() == [0.0, 1.0, 0.0] and hard[0, :, 0, 1].tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("g", [1, 2])
def test_frames_seen_whole_may_have_their_own_size(g: int) -> None:
    """The approximate first_stride attends pooled global frames: both paths take a first frame of
    another size than the query (any location is a candidate) and keep every logit's top-k (float64
    dense reference); G global frames of that size side by side too."""
    h, w, r, radius, tile, topk = 11, 13, 3, 4, 4, 6
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, 5, h, w, generator=gen, dtype=torch.float64)
    k0 = torch.randn(1, g, 5, 6, 7, generator=gen, dtype=torch.float64)  # pooled: (6, 7), not (11, 13)
    v0 = torch.rand(1, g, 3, 6, 7, generator=gen, dtype=torch.float64)
    keys = torch.randn(1, r, 5, h, w, generator=gen, dtype=torch.float64)
    values = torch.rand(1, r, 3, h, w, generator=gen, dtype=torch.float64)
    side = lambda x: x.permute(0, 2, 3, 1, 4).reshape(1, x.shape[2], 6, g * 7)  # noqa: E731 - G frames along the width
    ref = dense_mixed_reference(q, side(k0), side(v0), keys, values, radius=radius, temperature=0.3, topk=topk, window="disc")
    out = mixed_context_attention(q, k0 if g > 1 else k0[:, 0], v0 if g > 1 else v0[:, 0], keys, values,
                                  radius=radius, temperature=0.3, topk=topk, tile=tile, window="disc")  # fmt: skip
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    kr = torch.stack([frame_regions(keys[:, i], radius, tile, "disc") for i in range(r)], dim=2)
    vr = torch.stack([frame_regions(values[:, i], radius, tile, "disc") for i in range(r)], dim=2)
    out = mixed_context_attention_regions(q, side(k0), side(v0), kr, vr, radius=radius, temperature=0.3, topk=topk, tile=tile, window="disc")
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
