"""The precision rule of restricted attention: logits and softmax in float32 under autocast.

CorrFlow takes raw dot products of 64-d features at temperature 1, so logits reach the hundreds,
where bfloat16 has a spacing of 2 (256-512): computed in bf16, nearby candidates' logits would be
rounded by whole units before the softmax. The inputs here are built that way (every logit about
400, neighbours a few units apart), and every backend is held to the float64 dense reference on
the very same (possibly bf16-rounded) input values at float32-level tolerance.
"""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from corrflow.attention import functional as attention_functional
from corrflow.attention import restricted_attention
from tests.helpers.run_if import requires_cuda

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

CPU_BACKENDS = ["reference", "unfold", "tiled", "flex"]
# (B, R, C, D, H, W): sizes that are not FlexAttention bucket multiples; C, D <= 16, B = 1, R = 3,
# H, W <= 16 as in tests/test_attention_backends.py, so the compiled CPU kernel is shared.
SHAPE = (1, 3, 16, 16, 9, 13)
RADIUS, TEMPERATURE = 2, 0.5
# float32 logits of about 800 (400 / 0.5) are good to ~1e-4; the softmax turns that into about
# 1e-4 relative in the weights. bf16 logits are off by up to 2-4 units: errors of order 0.1.
ATOL, RTOL = 2e-5, 1e-4


def big_logit_inputs(shape=SHAPE, *, seed: int = 0, norm: float = 20.0, spread: float = 0.1):
    """float64 (q, k, v): features of norm ~``norm`` along one shared direction plus per-position
    noise of std ``spread`` (as in a smooth region of a trained encoder's features), so every
    logit is about norm^2 = 400 and neighbouring candidates differ by a few units. Values are
    distributions over D (as colour bins)."""
    b, r, c, d, h, w = shape
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(c, generator=g, dtype=torch.float64)
    base = base / base.norm() * norm
    q = base.view(1, c, 1, 1) + spread * torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    k = base.view(1, 1, c, 1, 1) + spread * torch.randn(b, r, c, h, w, generator=g, dtype=torch.float64)
    v = torch.randn(b, r, d, h, w, generator=g, dtype=torch.float64).softmax(2)
    return q, k, v


def _reference64(q, k, v, **kw):
    return restricted_attention(q.double(), k.double(), v.double(), backend="reference", **kw)


# A bf16 computation of the logits is off by this much or more on these inputs (the measured error
# is ~0.13, from logits of ~800 rounded by units): 1000x the tolerance the backends are held to, and
# 10x one bf16 rounding of the output (values in [0, 1], spacing <= 2^-8), so it is the logits'.
BF16_LOGITS_MIN_ERROR = 0.02


def test_a_bf16_computation_of_these_logits_misses_the_float64_reference() -> None:
    """The inputs exercise the precision rule: the dense reference op run under bf16 autocast
    without the rule (its matmuls in bf16, as autocast would run an unguarded backend) is off by
    more than BF16_LOGITS_MIN_ERROR, while the same op with the rule is within ATOL/RTOL."""
    from corrflow.attention.reference import restricted_attention_reference

    q, k, v = (t.float() for t in big_logit_inputs())
    want = _reference64(q, k, v, radius=RADIUS, temperature=TEMPERATURE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        unguarded = restricted_attention_reference(q, k, v, radius=RADIUS, temperature=TEMPERATURE)
        guarded = restricted_attention(q, k, v, radius=RADIUS, temperature=TEMPERATURE, backend="reference")
    assert unguarded.dtype == torch.bfloat16  # autocast did reach the unguarded op's matmuls
    err = (unguarded.double() - want).abs().max().item()
    assert err > BF16_LOGITS_MIN_ERROR, f"a bf16 computation is off by only {err:.2g}: these inputs do not exercise the rule"
    torch.testing.assert_close(guarded.double(), want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cpu_backend_under_bf16_autocast_matches_float64(backend: str, input_dtype: torch.dtype) -> None:
    """float32 inputs (autocast would cast the backend's matmuls) and bfloat16 inputs (what an
    encoder hands over under autocast) both give float32 results at float32 accuracy."""
    q, k, v = (t.to(input_dtype) for t in big_logit_inputs())
    want = _reference64(q, k, v, radius=RADIUS, temperature=TEMPERATURE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = restricted_attention(q, k, v, radius=RADIUS, temperature=TEMPERATURE, backend=backend)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("backend", ["reference", "unfold", "tiled"])
def test_cpu_backend_under_bf16_autocast_with_topk(backend: str) -> None:
    q, k, v = big_logit_inputs(seed=1)
    want = _reference64(q, k, v, radius=RADIUS, temperature=TEMPERATURE, topk=7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = restricted_attention(q.float(), k.float(), v.float(), radius=RADIUS, temperature=TEMPERATURE, topk=7, backend=backend)
    torch.testing.assert_close(got.double(), want, atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on the CPU needs a C++ compiler")
def test_flex_compiled_under_bf16_autocast_matches_float64() -> None:
    """The compiled FlexAttention forward (the CUDA path's kernel, compiled for the CPU) too."""
    from corrflow.attention.functional import _resolve

    q, k, v = (t.bfloat16() for t in big_logit_inputs(seed=2))
    want = _reference64(q, k, v, radius=RADIUS, temperature=TEMPERATURE)
    flex = _resolve("flex")  # the backend as the dispatcher runs it, with the precision rule
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = flex(q, k, v, radius=RADIUS, temperature=TEMPERATURE, topk=None, compiled=True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("backend", ["reference", "unfold", "tiled"])
def test_gradients_under_bf16_autocast_match_float64(backend: str) -> None:
    """Gradients flow through the rule's casts and are float32-accurate."""
    leaves = [t.float().requires_grad_() for t in big_logit_inputs(seed=3)]
    refs = [t.detach().double().requires_grad_() for t in leaves]
    grad = torch.randn(SHAPE[0], SHAPE[3], *SHAPE[4:], generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = restricted_attention(*leaves, radius=RADIUS, temperature=TEMPERATURE, backend=backend)
    got = torch.autograd.grad(out, leaves, grad.float())
    want = torch.autograd.grad(_reference64(*refs, radius=RADIUS, temperature=TEMPERATURE), refs, grad)
    for name, a, b in zip("qkv", got, want):
        assert a.dtype == torch.float32, name
        scale = b.abs().max()
        torch.testing.assert_close(a.double() / scale, b / scale, atol=1e-4, rtol=0, msg=f"d{name}")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bfloat16_without_autocast_is_computed_in_float32_and_returned_in_bfloat16(backend: str) -> None:
    """The same rule without autocast: bf16 in, bf16 out, but rounded once, at the end."""
    q, k, v = (t.bfloat16() for t in big_logit_inputs(seed=5))
    want = _reference64(q, k, v, radius=RADIUS, temperature=TEMPERATURE)
    got = restricted_attention(q, k, v, radius=RADIUS, temperature=TEMPERATURE, backend=backend)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=2**-8)  # one bf16 rounding


def test_auto_logs_the_backend_it_runs_once(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attention_functional, "_auto_choices_logged", set())
    q, k, v = big_logit_inputs(shape=(1, 1, 4, 2, 5, 6))
    with caplog.at_level(logging.INFO, logger="corrflow.attention.functional"):
        for topk in (None, None, 3):
            restricted_attention(q, k, v, radius=1, topk=topk)
        restricted_attention(q, k, v, radius=1, backend="unfold")  # not 'auto': nothing to say
    msgs = [r.getMessage() for r in caplog.records if r.name == "corrflow.attention.functional"]
    assert len(msgs) == 1 and "'tiled'" in msgs[0] and "cpu" in msgs[0], msgs


# ---- GPU: CUDA bf16 autocast, forward and backward, for the GPU backends ---------------------


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", ["flex", "triton", "tiled", "unfold"])
def test_cuda_bf16_autocast_matches_float64(backend: str, input_dtype: torch.dtype) -> None:
    """Training-like: 64-d features, M = 6, one reference, temperature 1, logits ~400."""
    if backend == "triton":
        pytest.importorskip("triton")
    shape = (2, 1, 64, 16, 24, 40)
    q, k, v = (t.to(input_dtype).cuda() for t in big_logit_inputs(shape, seed=6))
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    refs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = restricted_attention(*leaves, radius=6, temperature=1.0, backend=backend)
    want = restricted_attention(*refs, radius=6, temperature=1.0, backend="reference")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=ATOL, rtol=RTOL)
    grad = torch.randn(want.shape, generator=torch.Generator(device="cuda").manual_seed(7), device="cuda", dtype=torch.float64)
    got_g = torch.autograd.grad(got, leaves, grad.float())
    want_g = torch.autograd.grad(want, refs, grad)
    for name, a, b in zip("qkv", got_g, want_g):
        scale = b.abs().max()
        # 16-bit leaves get 16-bit gradients: one bf16 rounding (2^-8 relative) on top.
        tol = 1e-4 if input_dtype == torch.float32 else 1e-2
        torch.testing.assert_close(a.double() / scale, b / scale, atol=tol, rtol=0, msg=f"{backend} d{name}")
