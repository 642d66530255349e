"""The fused Triton restricted-attention kernel against the float64 dense reference.

Without a GPU, the kernel's logic is checked under Triton's CPU interpreter. Triton reads
``TRITON_INTERPRET`` when ``@triton.jit`` decorates the kernels (at import), so the interpreted
cases run in one subprocess (``python -m tests.test_attention_triton CASE...``) with the variable
set; it never leaks into this process. Each case reports relative errors (max |a - b| / max |b|)
of the output and of the gradients w.r.t. query, keys and values against autograd through the
reference in float64; the tests below assert on them. GPU tests check bf16/fp16 at larger sizes.

bfloat16 is not checked under the interpreter: Triton 3.8's interpreter stores bf16 as raw uint16
and its ``tl.dot`` multiplies those bit patterns (``np.matmul`` on uint16), so it is GPU-only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from corrflow.attention import available_backends, restricted_attention
from corrflow.attention.functional import _BACKENDS, auto_backend
from tests.helpers.run_if import requires_cuda

ROOT = Path(__file__).resolve().parents[1]

# id -> (B, R, C, D, H, W, radius, temperature, topk) and options. Sizes stay tiny: the
# interpreter runs one Python loop iteration per (program, reference, window row).
FAST_CASES: dict[str, dict] = {
    "one_ref_7x9_m2_d3": {"shape": (1, 1, 8, 3, 7, 9), "radius": 2, "temperature": 1.0},
    "three_refs_d16_b2": {"shape": (2, 3, 5, 16, 7, 9), "radius": 2, "temperature": 0.5},
    "radius0_d1": {"shape": (1, 2, 4, 1, 7, 9), "radius": 0, "temperature": 1.0},
    "radius6_wider_than_frame": {"shape": (1, 2, 6, 16, 7, 9), "radius": 6, "temperature": 0.7},
    "two_x_tiles_m3_odd": {"shape": (1, 2, 7, 3, 5, 37), "radius": 3, "temperature": 1.0},
    "one_row_one_col": {"shape": (1, 2, 4, 3, 1, 1), "radius": 2, "temperature": 1.0},
    "temperature_0_05_unit_features": {"shape": (1, 2, 16, 16, 6, 11), "radius": 2, "temperature": 0.05, "normalise": True},
    "d64": {"shape": (1, 1, 4, 64, 4, 6), "radius": 1, "temperature": 1.0},
    "non_contiguous": {"shape": (1, 2, 5, 3, 6, 7), "radius": 2, "temperature": 1.0, "non_contiguous": True},
    "float16": {"shape": (1, 2, 8, 3, 7, 9), "radius": 2, "temperature": 1.0, "dtype": "float16"},
    "topk5_three_refs": {"shape": (1, 3, 8, 4, 7, 9), "radius": 2, "temperature": 0.2, "topk": 5},
    "topk1_borders": {"shape": (1, 1, 8, 3, 5, 6), "radius": 2, "temperature": 1.0, "topk": 1},
    "topk_ties_keep_all": {"shape": (1, 2, 4, 3, 5, 7), "radius": 1, "temperature": 1.0, "topk": 3, "equal_keys": True},
    "topk_above_candidates": {"shape": (1, 2, 4, 3, 5, 7), "radius": 1, "temperature": 1.0, "topk": 18},
    # Through the dispatcher under CPU bf16 autocast with bf16 inputs (an encoder's output): its
    # precision rule upcasts them (the interpreter's bf16 dot is wrong), the result is float32.
    "autocast_bf16_dispatch": {
        "shape": (1, 2, 16, 16, 7, 9), "radius": 2, "temperature": 1.0, "dtype": "bfloat16", "autocast": True, "out_dtype": "float32",
        "grad_tolerance": 2**-7,  # the gradients of bf16 leaves are bf16: one rounding of the float32 ones
    },
}
SLOW_CASES: dict[str, dict] = {
    "large_m6_four_refs": {"shape": (2, 4, 32, 16, 20, 40), "radius": 6, "temperature": 0.1, "normalise": True},
    "large_topk10_m4": {"shape": (1, 5, 16, 16, 16, 36), "radius": 4, "temperature": 0.05, "topk": 10, "normalise": True},
}
TOLERANCE = {"float32": 2e-5, "float16": 5e-3, "bfloat16": 3e-2}


def _inputs(case: dict, *, seed: int, dtype: torch.dtype, device: str = "cpu"):
    b, r, c, d, h, w = case["shape"]
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    k = torch.randn(b, r, c, h, w, generator=g, dtype=torch.float64)
    v = torch.randn(b, r, d, h, w, generator=g, dtype=torch.float64)
    if case.get("normalise"):
        q, k = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(k, dim=2)
    if case.get("equal_keys"):
        k = torch.ones_like(k)
    # Round to the kernel's dtype first, so the float64 reference sees the very same numbers.
    q, k, v = (t.to(dtype).to(device) for t in (q, k, v))
    return q, k, v


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def run_case(case: dict, *, seed: int = 0, device: str = "cpu") -> dict:
    """Errors of the triton backend vs autograd through the float64 reference, for one case."""
    from corrflow.attention.reference import restricted_attention_reference
    from corrflow.attention.triton_kernel import restricted_attention_triton

    dtype = getattr(torch, case.get("dtype", "float32"))
    q, k, v = _inputs(case, seed=seed, dtype=dtype, device=device)
    if case.get("non_contiguous"):  # same values, permuted storage
        k = k.permute(0, 1, 2, 4, 3).contiguous().permute(0, 1, 2, 4, 3)
        v = v.transpose(0, 1).contiguous().transpose(0, 1)
    opts = {"radius": case["radius"], "temperature": case["temperature"], "topk": case.get("topk")}
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    if case.get("autocast"):
        with torch.autocast(device, dtype=torch.bfloat16):
            out = restricted_attention(*leaves, **opts, backend="triton")
    else:
        out = restricted_attention_triton(*leaves, **opts)
    refs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    expected = restricted_attention_reference(*refs, **opts)
    result = {"shape": list(out.shape), "dtype": str(out.dtype).removeprefix("torch."), "out": _rel(out, expected)}
    grad = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    if opts["topk"] is None or opts["topk"] >= case["shape"][1] * (2 * case["radius"] + 1) ** 2:
        got = torch.autograd.grad(out, leaves, grad.to(out.dtype).to(device))
        want = torch.autograd.grad(expected, refs, grad.to(device))
        result.update({f"d{n}": _rel(a, e) for n, a, e in zip("qkv", got, want)})
    else:
        try:
            out.backward(grad.to(out.dtype).to(device))
        except RuntimeError as err:
            result["backward_error"] = str(err)
    return result


def _run_interpreted(cases: dict[str, dict]) -> dict[str, dict]:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_attention_triton", *cases],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, f"interpreter run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fast_results() -> dict[str, dict]:
    return _run_interpreted(FAST_CASES)


@pytest.fixture(scope="module")
def slow_results() -> dict[str, dict]:
    return _run_interpreted(SLOW_CASES)


def _check(case: dict, res: dict) -> None:
    b, r, c, d, h, w = case["shape"]
    dtype = case.get("out_dtype", case.get("dtype", "float32"))
    assert "error" not in res, res.get("error")
    assert res["shape"] == [b, d, h, w]
    assert res["dtype"] == dtype
    tol = TOLERANCE[dtype]
    assert res["out"] < tol, res
    if "backward_error" in res:
        assert "forward-only" in res["backward_error"] and "backend='tiled'" in res["backward_error"]
    else:
        for name in ("dq", "dk", "dv"):
            assert res[name] < case.get("grad_tolerance", 3 * tol), (name, res)


@pytest.mark.parametrize("name", sorted(FAST_CASES))
def test_interpreted_matches_reference(name: str, fast_results: dict[str, dict]) -> None:
    _check(FAST_CASES[name], fast_results[name])


def test_interpreted_topk_backward_says_forward_only(fast_results: dict[str, dict]) -> None:
    assert "backward_error" in fast_results["topk5_three_refs"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_CASES))
def test_interpreted_matches_reference_large(name: str, slow_results: dict[str, dict]) -> None:
    _check(SLOW_CASES[name], slow_results[name])


# ---- registration and errors (this process: compiled mode, no interpreter) -------------------


def test_registered_in_dispatch() -> None:
    assert _BACKENDS["triton"] == "corrflow.attention.triton_kernel:restricted_attention_triton"
    assert "triton" not in available_backends("cpu")
    assert "triton" in available_backends("cuda")  # triton is installed here
    # Until the kernel has run on a GPU, 'auto' keeps FlexAttention (tiled with top-k) on CUDA.
    assert auto_backend(torch.device("cuda")) == "flex"
    assert auto_backend(torch.device("cuda"), topk=10) == "tiled"
    assert auto_backend(torch.device("cpu")) == "tiled"


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="this process runs the interpreter")
def test_cpu_without_interpreter_explains() -> None:
    q, k, v = torch.randn(1, 4, 5, 5), torch.randn(1, 1, 4, 5, 5), torch.randn(1, 1, 2, 5, 5)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        restricted_attention(q, k, v, radius=1, backend="triton")


def test_rejects_float64_and_bad_arguments() -> None:
    q, k, v = torch.randn(1, 4, 5, 5), torch.randn(1, 1, 4, 5, 5), torch.randn(1, 1, 2, 5, 5)
    with pytest.raises(TypeError, match="float64"):
        restricted_attention(q.double(), k.double(), v.double(), radius=1, backend="triton")
    with pytest.raises(ValueError, match="temperature"):
        restricted_attention(q, k, v, radius=1, temperature=0.0, backend="triton")


# ---- GPU: half precision at larger sizes -----------------------------------------------------

GPU_CASES = {
    "bf16_m6_three_refs": {"shape": (2, 3, 64, 16, 32, 40), "radius": 6, "temperature": 0.05, "dtype": "bfloat16", "normalise": True},
    "fp16_m8_odd": {"shape": (1, 4, 128, 16, 23, 45), "radius": 8, "temperature": 0.05, "dtype": "float16", "normalise": True},
    "bf16_d1": {"shape": (2, 2, 32, 1, 17, 33), "radius": 2, "temperature": 0.1, "dtype": "bfloat16", "normalise": True},
    "fp32_d64": {"shape": (1, 2, 64, 64, 16, 24), "radius": 4, "temperature": 0.1, "normalise": True},
    "bf16_topk10_m8": {"shape": (1, 6, 64, 16, 20, 36), "radius": 8, "temperature": 0.05, "dtype": "bfloat16", "topk": 10, "normalise": True},
}


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("name", sorted(GPU_CASES))
def test_gpu_half_precision(name: str) -> None:
    _check(GPU_CASES[name], run_case(GPU_CASES[name], device="cuda"))


@pytest.mark.gpu
@requires_cuda
def test_gpu_training_size_matches_tiled() -> None:
    """Batch 24, 256 channels, 64x64, M = 6, 16 values, one reference; bf16 against tiled in fp32."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(24, 256, 64, 64, device="cuda", generator=g), dim=1)
    k = torch.nn.functional.normalize(torch.randn(24, 1, 256, 64, 64, device="cuda", generator=g), dim=2)
    v = torch.randn(24, 1, 16, 64, 64, device="cuda", generator=g).softmax(2)
    want = restricted_attention(q, k, v, radius=6, temperature=0.05, backend="tiled")
    got = restricted_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), radius=6, temperature=0.05, backend="triton")
    assert got.dtype == torch.bfloat16
    assert _rel(got, want) < 5e-2


if __name__ == "__main__":  # worker: python -m tests.test_attention_triton CASE... (with TRITON_INTERPRET=1)
    all_cases = {**FAST_CASES, **SLOW_CASES}
    results = {}
    for case_id in sys.argv[1:]:
        try:
            results[case_id] = run_case(all_cases[case_id])
        except Exception as err:  # reported per case, so one failure does not hide the others
            results[case_id] = {"error": f"{type(err).__name__}: {err}"}
    print(json.dumps(results))
