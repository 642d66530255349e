"""Every exact restricted-attention backend except triton (tests/test_attention_triton.py) against
the float64 dense reference: interior and border outputs, several references, top-k, gradients.

FlexAttention has no backward on the CPU, so its gradient agreement is a GPU test; its compiled
forward (the path CUDA takes: the neighbourhood mask traced by dynamo into a block-sparse kernel)
is checked on the CPU too, where a C++ compiler is present.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from corrflow.attention import restricted_attention
from tests.helpers.run_if import requires_cuda

BACKENDS = ["unfold", "tiled", "flex"]
GRAD_BACKENDS = ["unfold", "tiled"]

# (B, R, C, D, H, W), radius, temperature
CASES = {
    "one_ref": ((2, 1, 6, 4, 12, 14), 2, 1.0),
    "three_refs": ((1, 3, 5, 3, 9, 13), 2, 0.5),
    "odd_7x9_radius6": ((1, 2, 4, 16, 7, 9), 6, 0.3),
    "radius0": ((1, 2, 4, 1, 5, 6), 0, 1.0),
    "wider_than_tile": ((1, 2, 3, 2, 11, 19), 3, 0.2),
}


def _inputs(shape, *, seed=0, device="cpu", dtype=torch.float64, requires_grad=False):
    b, r, c, d, h, w = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    k = torch.randn(b, r, c, h, w, generator=g, dtype=dtype)
    v = torch.randn(b, r, d, h, w, generator=g, dtype=dtype)
    return [t.to(device).requires_grad_(requires_grad) for t in (q, k, v)]


def _interior(h: int, w: int, radius: int) -> torch.Tensor:
    """(H, W) bool: locations whose whole window lies inside the frame."""
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[radius : h - radius, radius : w - radius] = True
    return inside


def test_reference_interior_is_the_window_softmax() -> None:
    """The reference itself, at one interior pixel, against a hand-written window softmax."""
    q, k, v = _inputs((1, 2, 3, 2, 7, 8), seed=3)
    m, t, (y, x) = 2, 0.7, (3, 4)
    out = restricted_attention(q, k, v, radius=m, temperature=t, backend="reference")
    win_k = k[0, :, :, y - m : y + m + 1, x - m : x + m + 1].permute(0, 2, 3, 1).reshape(-1, 3)  # (R*25, C)
    win_v = v[0, :, :, y - m : y + m + 1, x - m : x + m + 1].permute(0, 2, 3, 1).reshape(-1, 2)
    expected = torch.softmax(win_k @ q[0, :, y, x] / t, dim=0) @ win_v
    torch.testing.assert_close(out[0, :, y, x], expected)


def test_reference_corner_excludes_out_of_frame() -> None:
    """At the corner (0, 0) only the in-frame part of the window enters the softmax."""
    q, k, v = _inputs((1, 1, 3, 2, 5, 5), seed=4)
    out = restricted_attention(q, k, v, radius=1, backend="reference")
    win_k, win_v = k[0, 0, :, :2, :2].reshape(3, 4), v[0, 0, :, :2, :2].reshape(2, 4)
    torch.testing.assert_close(out[0, :, 0, 0], win_v @ torch.softmax(q[0, :, 0, 0] @ win_k, dim=0))


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_reference_float64(backend: str, case: str) -> None:
    shape, radius, temperature = CASES[case]
    q, k, v = _inputs(shape)
    want = restricted_attention(q, k, v, radius=radius, temperature=temperature, backend="reference")
    got = restricted_attention(q, k, v, radius=radius, temperature=temperature, backend=backend)
    assert got.shape == want.shape == (shape[0], shape[3], shape[4], shape[5])
    assert got.dtype == torch.float64
    inner = _interior(shape[4], shape[5], radius)
    torch.testing.assert_close(got[..., inner], want[..., inner], rtol=1e-10, atol=1e-10, msg="interior")
    torch.testing.assert_close(got[..., ~inner], want[..., ~inner], rtol=1e-10, atol=1e-10, msg="borders")


@pytest.mark.parametrize("backend", ["unfold", "tiled"])
@pytest.mark.parametrize("topk", [1, 5, 30])
def test_topk_matches_reference(backend: str, topk: int) -> None:
    q, k, v = _inputs((1, 3, 5, 3, 9, 11), seed=1)
    want = restricted_attention(q, k, v, radius=2, temperature=0.2, topk=topk, backend="reference")
    got = restricted_attention(q, k, v, radius=2, temperature=0.2, topk=topk, backend=backend)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_topk_one_is_the_best_match() -> None:
    """topk=1 copies the value of the single best candidate (a property, not a comparison)."""
    q, k, v = _inputs((1, 2, 4, 2, 6, 7), seed=2)
    out = restricted_attention(q, k, v, radius=1, topk=1, backend="tiled")
    y, x = 3, 3
    logits = torch.einsum("c,rcij->rij", q[0, :, y, x], k[0, :, :, y - 1 : y + 2, x - 1 : x + 2])
    r, i, j = torch.unravel_index(logits.argmax(), logits.shape)
    torch.testing.assert_close(out[0, :, y, x], v[0, r, :, y - 1 + i, x - 1 + j])


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on the CPU needs a C++ compiler")
def test_flex_compiled_forward_matches_reference() -> None:
    """The compiled FlexAttention path (fp32, several references, borders) against float64."""
    from corrflow.attention.flex import restricted_attention_flex

    shape, radius, temperature = CASES["three_refs"]
    q, k, v = _inputs(shape, seed=8)
    want = restricted_attention(q, k, v, radius=radius, temperature=temperature, backend="reference")
    got = restricted_attention_flex(q.float(), k.float(), v.float(), radius=radius, temperature=temperature, compiled=True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_flex_rejects_topk() -> None:
    q, k, v = _inputs((1, 1, 4, 2, 5, 5))
    with pytest.raises(ValueError, match="top-k"):
        restricted_attention(q, k, v, radius=1, topk=3, backend="flex")


def test_reference_gradcheck() -> None:
    q, k, v = _inputs((1, 2, 2, 2, 3, 4), seed=5, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v: restricted_attention(q, k, v, radius=1, temperature=0.7, backend="reference"), (q, k, v)
    )


def _grads(backend: str, shape, radius: float, temperature: float, device: str = "cpu"):
    q, k, v = _inputs(shape, seed=6, device=device, requires_grad=True)
    out = restricted_attention(q, k, v, radius=radius, temperature=temperature, backend=backend)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype).to(device)
    return torch.autograd.grad(out, (q, k, v), g)


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
@pytest.mark.parametrize("case", ["three_refs", "odd_7x9_radius6", "wider_than_tile"])
def test_gradients_match_reference(backend: str, case: str) -> None:
    shape, radius, temperature = CASES[case]
    for name, got, want in zip("qkv", _grads(backend, shape, radius, temperature), _grads("reference", shape, radius, temperature)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10, msg=f"d{name}")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("case", ["three_refs", "odd_7x9_radius6"])
def test_flex_gradients_match_reference_gpu(case: str) -> None:
    shape, radius, temperature = CASES[case]
    got = _grads("flex", shape, radius, temperature, device="cuda")
    want = _grads("reference", shape, radius, temperature, device="cuda")
    for name, a, b in zip("qkv", got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, msg=f"d{name}")
