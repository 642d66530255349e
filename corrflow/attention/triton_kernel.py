"""Fused restricted attention in Triton: forward and backward with an online softmax.

The affinity never lives in memory. Each program owns a tile of ``BLOCK_X`` target positions on
one row of the target frame and loops over every reference frame ``r`` and every window row
``ky`` in ``[y - M, y + M]`` (clipped to the frame). For one (r, ky) it loads the key row segment
``[x0 - M, x0 + BLOCK_X + M)`` (``BLOCK_K`` = the next power of two of ``BLOCK_X + 2M`` columns),
computes a ``(BLOCK_X, BLOCK_K)`` logit block with ``tl.dot``, masks offsets beyond M and
positions outside the frame to -inf, and folds the block into a running (max, sum, weighted
value) online softmax. All references share that one softmax, so it is joint over references.

Memory traffic: q is read once and out (plus a float32 log-sum-exp per target, kept for the
backward) written once; each key/value row segment is reused from L2 by the (2M + 1) target rows
whose windows cover it, so DRAM sees k and v about once when the working set of in-flight rows
fits in L2 (50 MB on an H100). Logits waste: a tile computes ``BLOCK_X * BLOCK_K`` logits per
window row of which ``BLOCK_X * (2M + 1)`` are used (40 % at M = 6, BLOCK_X = 16; 53 % at
M = 8), which tensor cores absorb; the op stays bandwidth-bound.

Backward (no top-k) follows FlashAttention-2, with two kernels and no atomics:

* ``_bwd_dq_kernel`` is target-centric like the forward and accumulates dq in registers;
* ``_bwd_dkv_kernel`` is key-centric: a program owns ``BLOCK_X`` key positions of one reference
  row and loops over the target rows ``ty`` in ``[ky - M, ky + M]`` whose windows reach them,
  recomputing probabilities from the saved log-sum-exp, accumulating dk and dv in registers.

Top-k (forward only): a first pass keeps a running top-k of each target's logits (a
``(BLOCK_X, BLOCK_TOPK)`` register array updated by repeated max/argmin replacement, which stops
as soon as no row can improve) and writes the k-th largest logit; the second pass is the normal
forward with logits below that threshold masked. Ties at the threshold are all kept, as in the
reference. Both passes compute logits with identical code, so the comparison is exact.

Dtypes: float32, bfloat16 and float16 inputs; logits, softmax statistics and accumulators are
float32; 16-bit operands go to the tensor cores as they are (probabilities are cast to the
values' dtype for the P @ V product, as in FlashAttention). float32 operands use TF32 only when
``torch.backends.cuda.matmul.allow_tf32`` is set, like ``torch.matmul``. Through the dispatcher
(``restricted_attention``), query and keys reach the kernel as they are while values are upcast to
float32 (its precision rule), so under bf16 autocast the probabilities meet float32 values.

CPU: Triton's interpreter runs these kernels on CPU tensors when ``TRITON_INTERPRET=1`` is set
before this module is imported (Triton 3.x reads the variable when ``@triton.jit`` decorates a
kernel, i.e. at import). It is slow and meant for tests; without it, CPU tensors raise a clear
error. Block sizes are autotuned on the GPU and fixed under the interpreter.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_INTERPRETER_BLOCK_X = 16
_LOG2E = math.log2(math.e)


@triton.constexpr_function
def _key_block(block_x, radius):
    """Columns of one key row segment: BLOCK_X + 2M rounded up to a power of two (>= 16)."""
    return max(16, triton.next_power_of_2(block_x + 2 * radius))


def _autotune_configs() -> list[triton.Config]:
    return [
        triton.Config({"BLOCK_X": bx}, num_warps=nw, num_stages=ns)
        for bx in (16, 32, 64)
        for nw in (2, 4, 8)
        for ns in (1, 2, 3)
    ]


# Operand elements (q tile + key segment) per thread above which ptxas spills: from `ptxas -v` on
# sm_90a builds of these kernels (bf16; C=256, BLOCK_X=16: 4 warps spill 240 B, 8 warps use 227
# registers and none; C=64, BLOCK_X=32, 4 warps: 248 registers, no spill).
_MAX_OPERAND_ELEMENTS_PER_THREAD = 48


def _prune_configs(configs, named_args, **kwargs):
    """Drop configs whose q tile plus key segment would spill registers (see the constant above)."""
    block_c = kwargs.get("BLOCK_C", named_args.get("BLOCK_C", 64))
    radius = kwargs.get("RADIUS", named_args.get("RADIUS", 0))

    def per_thread(cfg):
        bx = cfg.kwargs["BLOCK_X"]
        return (bx + _key_block.fn(bx, radius)) * block_c / (32 * cfg.num_warps)

    kept = [cfg for cfg in configs if per_thread(cfg) <= _MAX_OPERAND_ELEMENTS_PER_THREAD]
    return kept or [min(configs, key=per_thread)]


def _maybe_autotune(kernel):
    """Wrap ``kernel`` in ``triton.autotune`` for compiled use; the interpreter takes it bare."""
    if not isinstance(kernel, triton.runtime.JITFunction):  # InterpretedFunction
        return kernel
    return triton.autotune(
        configs=_autotune_configs(),
        key=["C", "D", "R", "W", "RADIUS", "BLOCK_C", "BLOCK_D", "HAS_TOPK"],
        prune_configs_by={"early_config_prune": _prune_configs},
    )(kernel)


# --------------------------------------------------------------------------------------------
# Kernels. Layouts (all contiguous): q (B, C, H, W); k (B, R, C, H, W); v (B, R, D, H, W);
# o / do (B, D, H, W); lse / delta / thr (B, H, W) float32 (lse in log2 units of scaled logits).
# --------------------------------------------------------------------------------------------


@triton.jit
def _topk_threshold_kernel(
    q_ptr, k_ptr, thr_ptr,
    C, H, W, R, qk_scale,
    TOPK: tl.constexpr, BLOCK_TOPK: tl.constexpr, RADIUS: tl.constexpr,
    BLOCK_X: tl.constexpr, BLOCK_C: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """thr[b, y, x] = the TOPK-th largest scaled logit of target (y, x) (-inf if it has fewer)."""
    BLOCK_K: tl.constexpr = _key_block(BLOCK_X, RADIUS)
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    n_xt = tl.cdiv(W, BLOCK_X)
    y = pid // n_xt
    x0 = (pid % n_xt) * BLOCK_X
    hw = H * W
    xs = x0 + tl.arange(0, BLOCK_X)
    x_ok = xs < W
    cs = tl.arange(0, BLOCK_C)
    c_ok = cs < C
    js = tl.arange(0, BLOCK_K)
    kx = x0 - RADIUS + js
    kx_ok = (kx >= 0) & (kx < W)
    near = (tl.abs(kx[None, :] - xs[:, None]) <= RADIUS) & kx_ok[None, :] & x_ok[:, None]
    q = tl.load(
        q_ptr + b * C * hw + cs[None, :] * hw + y * W + xs[:, None], mask=x_ok[:, None] & c_ok[None, :], other=0.0
    )  # (BLOCK_X, BLOCK_C)
    slots = tl.arange(0, BLOCK_TOPK)
    # Running top-k per target; slots beyond TOPK hold +inf so they are never the minimum.
    top = tl.where(slots[None, :] < TOPK, float("-inf"), float("inf")) + tl.zeros([BLOCK_X, BLOCK_TOPK], tl.float32)
    ky_lo = tl.maximum(y - RADIUS, 0)
    ky_hi = tl.minimum(y + RADIUS + 1, H)
    for r in range(0, R):
        k_base = k_ptr + (b * R + r) * C * hw
        for ky in range(ky_lo, ky_hi):
            kt = tl.load(k_base + cs[:, None] * hw + ky * W + kx[None, :], mask=c_ok[:, None] & kx_ok[None, :], other=0.0)
            s = tl.dot(q, kt, input_precision=DOT_PRECISION) * qk_scale
            s = tl.where(near, s, float("-inf"))
            low = tl.min(top, 1)
            best = tl.max(s, 1)
            go = tl.max((best > low).to(tl.int32), 0)
            while go > 0:
                improve = best > low
                take = tl.argmax(s, 1)
                slot = tl.argmin(top, 1)
                top = tl.where((slots[None, :] == slot[:, None]) & improve[:, None], best[:, None], top)
                s = tl.where((js[None, :] == take[:, None]) & improve[:, None], float("-inf"), s)
                low = tl.min(top, 1)
                best = tl.max(s, 1)
                go = tl.max((best > low).to(tl.int32), 0)
    tl.store(thr_ptr + b * hw + y * W + xs, tl.min(top, 1), mask=x_ok)


@triton.jit
def _fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, thr_ptr,
    C, D, H, W, R, qk_scale,
    RADIUS: tl.constexpr, HAS_TOPK: tl.constexpr,
    BLOCK_X: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """o[b, :, y, x] = softmax-weighted values; lse[b, y, x] = log2-sum-exp2 of scaled logits."""
    BLOCK_K: tl.constexpr = _key_block(BLOCK_X, RADIUS)
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    n_xt = tl.cdiv(W, BLOCK_X)
    y = pid // n_xt
    x0 = (pid % n_xt) * BLOCK_X
    hw = H * W
    xs = x0 + tl.arange(0, BLOCK_X)
    x_ok = xs < W
    cs = tl.arange(0, BLOCK_C)
    c_ok = cs < C
    ds = tl.arange(0, BLOCK_D)
    d_ok = ds < D
    kx = x0 - RADIUS + tl.arange(0, BLOCK_K)
    kx_ok = (kx >= 0) & (kx < W)
    near = (tl.abs(kx[None, :] - xs[:, None]) <= RADIUS) & kx_ok[None, :] & x_ok[:, None]  # (BLOCK_X, BLOCK_K)
    q = tl.load(
        q_ptr + b * C * hw + cs[None, :] * hw + y * W + xs[:, None], mask=x_ok[:, None] & c_ok[None, :], other=0.0
    )  # (BLOCK_X, BLOCK_C)
    if HAS_TOPK:
        thr = tl.load(thr_ptr + b * hw + y * W + xs, mask=x_ok, other=float("-inf"))
    m_i = tl.full([BLOCK_X], -1.0e30, tl.float32)  # finite start: exp2(m_old - m_new) never sees inf - inf
    l_i = tl.zeros([BLOCK_X], tl.float32)
    acc = tl.zeros([BLOCK_X, BLOCK_D], tl.float32)
    ky_lo = tl.maximum(y - RADIUS, 0)
    ky_hi = tl.minimum(y + RADIUS + 1, H)
    for r in range(0, R):
        k_base = k_ptr + (b * R + r) * C * hw
        v_base = v_ptr + (b * R + r) * D * hw
        for ky in range(ky_lo, ky_hi):
            kt = tl.load(k_base + cs[:, None] * hw + ky * W + kx[None, :], mask=c_ok[:, None] & kx_ok[None, :], other=0.0)
            s = tl.dot(q, kt, input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_X, BLOCK_K), log2 units
            s = tl.where(near, s, float("-inf"))
            if HAS_TOPK:
                s = tl.where(s >= thr[:, None], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            vv = tl.load(v_base + ds[None, :] * hw + ky * W + kx[:, None], mask=kx_ok[:, None] & d_ok[None, :], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(vv.dtype), vv, input_precision=DOT_PRECISION)
            m_i = m_new
    l_safe = tl.where(l_i > 0, l_i, 1.0)  # only targets outside the frame (never stored) have l = 0
    out = acc / l_safe[:, None]
    tl.store(
        o_ptr + b * D * hw + ds[None, :] * hw + y * W + xs[:, None],
        out.to(o_ptr.dtype.element_ty),
        mask=x_ok[:, None] & d_ok[None, :],
    )
    tl.store(lse_ptr + b * hw + y * W + xs, m_i + tl.log2(l_safe), mask=x_ok)


@triton.jit
def _bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    C, D, H, W, R, qk_scale, sm_scale,
    RADIUS: tl.constexpr,
    BLOCK_X: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """dq[b, :, y, x] = sum over candidates j of P_j (dO . v_j - delta) k_j / temperature."""
    BLOCK_K: tl.constexpr = _key_block(BLOCK_X, RADIUS)
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    n_xt = tl.cdiv(W, BLOCK_X)
    y = pid // n_xt
    x0 = (pid % n_xt) * BLOCK_X
    hw = H * W
    xs = x0 + tl.arange(0, BLOCK_X)
    x_ok = xs < W
    cs = tl.arange(0, BLOCK_C)
    c_ok = cs < C
    ds = tl.arange(0, BLOCK_D)
    d_ok = ds < D
    kx = x0 - RADIUS + tl.arange(0, BLOCK_K)
    kx_ok = (kx >= 0) & (kx < W)
    near = (tl.abs(kx[None, :] - xs[:, None]) <= RADIUS) & kx_ok[None, :] & x_ok[:, None]
    q = tl.load(
        q_ptr + b * C * hw + cs[None, :] * hw + y * W + xs[:, None], mask=x_ok[:, None] & c_ok[None, :], other=0.0
    )  # (BLOCK_X, BLOCK_C)
    do = tl.load(
        do_ptr + b * D * hw + ds[None, :] * hw + y * W + xs[:, None], mask=x_ok[:, None] & d_ok[None, :], other=0.0
    )  # (BLOCK_X, BLOCK_D)
    lse = tl.load(lse_ptr + b * hw + y * W + xs, mask=x_ok, other=0.0)
    delta = tl.load(delta_ptr + b * hw + y * W + xs, mask=x_ok, other=0.0)
    dq = tl.zeros([BLOCK_X, BLOCK_C], tl.float32)
    ky_lo = tl.maximum(y - RADIUS, 0)
    ky_hi = tl.minimum(y + RADIUS + 1, H)
    for r in range(0, R):
        k_base = k_ptr + (b * R + r) * C * hw
        v_base = v_ptr + (b * R + r) * D * hw
        for ky in range(ky_lo, ky_hi):
            kt = tl.load(k_base + cs[:, None] * hw + ky * W + kx[None, :], mask=c_ok[:, None] & kx_ok[None, :], other=0.0)
            s = tl.dot(q, kt, input_precision=DOT_PRECISION) * qk_scale
            p = tl.exp2(tl.where(near, s, float("-inf")) - lse[:, None])  # (BLOCK_X, BLOCK_K)
            vt = tl.load(v_base + ds[:, None] * hw + ky * W + kx[None, :], mask=d_ok[:, None] & kx_ok[None, :], other=0.0)
            dp = tl.dot(do, vt.to(do.dtype), input_precision=DOT_PRECISION)  # (BLOCK_X, BLOCK_K)
            dsc = p * (dp - delta[:, None])
            dq += tl.dot(dsc.to(kt.dtype), tl.trans(kt), input_precision=DOT_PRECISION)
    tl.store(
        dq_ptr + b * C * hw + cs[None, :] * hw + y * W + xs[:, None],
        (dq * sm_scale).to(dq_ptr.dtype.element_ty),
        mask=x_ok[:, None] & c_ok[None, :],
    )


@triton.jit
def _bwd_dkv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    C, D, H, W, R, qk_scale, sm_scale,
    RADIUS: tl.constexpr,
    BLOCK_X: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """dk, dv for BLOCK_X key positions of reference r, row ky: sums over the targets that see them."""
    BLOCK_K: tl.constexpr = _key_block(BLOCK_X, RADIUS)
    pid = tl.program_id(0)
    r = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    n_xt = tl.cdiv(W, BLOCK_X)
    ky = pid // n_xt
    kx0 = (pid % n_xt) * BLOCK_X
    hw = H * W
    kxs = kx0 + tl.arange(0, BLOCK_X)
    kx_ok = kxs < W
    cs = tl.arange(0, BLOCK_C)
    c_ok = cs < C
    ds = tl.arange(0, BLOCK_D)
    d_ok = ds < D
    tx = kx0 - RADIUS + tl.arange(0, BLOCK_K)  # target columns whose windows may reach these keys
    tx_ok = (tx >= 0) & (tx < W)
    near = (tl.abs(tx[None, :] - kxs[:, None]) <= RADIUS) & tx_ok[None, :] & kx_ok[:, None]  # (BLOCK_X, BLOCK_K)
    kk = tl.load(
        k_ptr + (b * R + r) * C * hw + cs[None, :] * hw + ky * W + kxs[:, None],
        mask=kx_ok[:, None] & c_ok[None, :],
        other=0.0,
    )  # (BLOCK_X, BLOCK_C)
    vv = tl.load(
        v_ptr + (b * R + r) * D * hw + ds[None, :] * hw + ky * W + kxs[:, None],
        mask=kx_ok[:, None] & d_ok[None, :],
        other=0.0,
    )  # (BLOCK_X, BLOCK_D)
    dk = tl.zeros([BLOCK_X, BLOCK_C], tl.float32)
    dv = tl.zeros([BLOCK_X, BLOCK_D], tl.float32)
    ty_lo = tl.maximum(ky - RADIUS, 0)
    ty_hi = tl.minimum(ky + RADIUS + 1, H)
    for ty in range(ty_lo, ty_hi):
        qt = tl.load(
            q_ptr + b * C * hw + cs[:, None] * hw + ty * W + tx[None, :], mask=c_ok[:, None] & tx_ok[None, :], other=0.0
        )  # (BLOCK_C, BLOCK_K)
        dot_ = tl.load(
            do_ptr + b * D * hw + ds[None, :] * hw + ty * W + tx[:, None], mask=tx_ok[:, None] & d_ok[None, :], other=0.0
        )  # (BLOCK_K, BLOCK_D)
        lse = tl.load(lse_ptr + b * hw + ty * W + tx, mask=tx_ok, other=0.0)
        delta = tl.load(delta_ptr + b * hw + ty * W + tx, mask=tx_ok, other=0.0)
        st = tl.dot(kk, qt, input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_X, BLOCK_K)
        pt = tl.exp2(tl.where(near, st, float("-inf")) - lse[None, :])
        dv += tl.dot(pt.to(dot_.dtype), dot_, input_precision=DOT_PRECISION)
        dpt = tl.dot(vv.to(dot_.dtype), tl.trans(dot_), input_precision=DOT_PRECISION)  # (BLOCK_X, BLOCK_K)
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision=DOT_PRECISION)
    kv_mask = kx_ok[:, None]
    tl.store(
        dk_ptr + (b * R + r) * C * hw + cs[None, :] * hw + ky * W + kxs[:, None],
        (dk * sm_scale).to(dk_ptr.dtype.element_ty),
        mask=kv_mask & c_ok[None, :],
    )
    tl.store(
        dv_ptr + (b * R + r) * D * hw + ds[None, :] * hw + ky * W + kxs[:, None],
        dv.to(dv_ptr.dtype.element_ty),
        mask=kv_mask & d_ok[None, :],
    )


_fwd = _maybe_autotune(_fwd_kernel)
_bwd_dq = _maybe_autotune(_bwd_dq_kernel)
_bwd_dkv = _maybe_autotune(_bwd_dkv_kernel)


# --------------------------------------------------------------------------------------------
# Host side.
# --------------------------------------------------------------------------------------------


def interpreting() -> bool:
    """Whether these kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return not isinstance(_fwd_kernel, triton.runtime.JITFunction)


def _check_inputs(query: Tensor, keys: Tensor, values: Tensor, temperature: float) -> None:
    for name, t in (("query", query), ("keys", keys), ("values", values)):
        if t.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(
                f"the triton backend takes float32, bfloat16 or float16 tensors; {name} is {t.dtype} "
                "(use backend='tiled' or 'reference' for float64)"
            )
        if t.device != query.device:
            raise ValueError(f"{name} is on {t.device} but query is on {query.device}")
    if temperature == 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be finite and non-zero, got {temperature}")
    if query.device.type == "cpu" and not interpreting():
        raise RuntimeError(
            "the triton backend needs CUDA tensors. To run it on the CPU (slowly, for tests), set "
            "TRITON_INTERPRET=1 before corrflow.attention.triton_kernel is first imported; "
            "otherwise use backend='tiled'"
        )
    if query.device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"the triton backend runs on CUDA (or the CPU interpreter), not on {query.device}")


def _blocks(c: int, d: int) -> dict[str, int]:
    return {"BLOCK_C": max(16, triton.next_power_of_2(c)), "BLOCK_D": max(16, triton.next_power_of_2(d))}


def _dot_precision(dtype: torch.dtype) -> str:
    """TF32 for float32 operands only where torch.matmul would use it too."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _launch(kernel, *, width: int, rows: int, extra_grid: tuple[int, ...], args: tuple, meta: dict) -> None:
    """Launch over (cdiv(width, BLOCK_X) * rows, *extra_grid) programs.

    BLOCK_X (and warps, stages) are autotuned when compiled; the interpreter uses a fixed tile.
    """
    if isinstance(kernel, triton.runtime.Autotuner):
        kernel[lambda m: (triton.cdiv(width, m["BLOCK_X"]) * rows, *extra_grid)](*args, **meta)
    else:
        bx = _INTERPRETER_BLOCK_X
        kernel[(triton.cdiv(width, bx) * rows, *extra_grid)](*args, BLOCK_X=bx, **meta)


def _topk_threshold(q: Tensor, k: Tensor, *, radius: int, qk_scale: float, topk: int) -> Tensor:
    b, c, h, w = q.shape
    thr = torch.empty((b, h, w), device=q.device, dtype=torch.float32)
    bx, block_c = 16, _blocks(c, 1)["BLOCK_C"]  # not autotuned (forward-only inference path)
    meta = {} if interpreting() else {"num_warps": 8 if block_c >= 128 else 4}  # 4 warps spill at C = 256
    _topk_threshold_kernel[(triton.cdiv(w, bx) * h, b)](
        q, k, thr, c, h, w, k.shape[1], qk_scale,
        TOPK=topk, BLOCK_TOPK=max(16, triton.next_power_of_2(topk)), RADIUS=radius,
        BLOCK_X=bx, BLOCK_C=block_c, DOT_PRECISION=_dot_precision(q.dtype), **meta,
    )  # fmt: skip
    return thr


def _forward(q: Tensor, k: Tensor, v: Tensor, *, radius: int, temperature: float, topk: int | None):
    """(q, k, v) contiguous -> out (B, D, H, W) in promote(q, v) dtype, lse (B, H, W) float32 (log2 units)."""
    b, c, h, w = q.shape
    r, d = k.shape[1], v.shape[2]
    qk_scale = _LOG2E / temperature
    out = torch.empty((b, d, h, w), device=q.device, dtype=torch.promote_types(q.dtype, v.dtype))
    lse = torch.empty((b, h, w), device=q.device, dtype=torch.float32)
    thr = _topk_threshold(q, k, radius=radius, qk_scale=qk_scale, topk=topk) if topk is not None else lse
    meta = {"RADIUS": radius, "HAS_TOPK": topk is not None, "DOT_PRECISION": _dot_precision(q.dtype), **_blocks(c, d)}
    args = (q, k, v, out, lse, thr, c, d, h, w, r, qk_scale)
    _launch(_fwd, width=w, rows=h, extra_grid=(b,), args=args, meta=meta)
    return out, lse


def _backward(q, k, v, out, lse, grad_out, *, radius: int, temperature: float, needs: tuple[bool, bool, bool]):
    b, c, h, w = q.shape
    r, d = k.shape[1], v.shape[2]
    qk_scale, sm_scale = _LOG2E / temperature, 1.0 / temperature
    grad_out = grad_out.contiguous()
    delta = (grad_out.float() * out.float()).sum(1).contiguous()  # (B, H, W): dO . O per target
    meta = {"RADIUS": radius, "DOT_PRECISION": _dot_precision(q.dtype), **_blocks(c, d)}
    dq = dk = dv = None
    if needs[0]:
        dq = torch.empty_like(q)
        args = (q, k, v, grad_out, lse, delta, dq, c, d, h, w, r, qk_scale, sm_scale)
        _launch(_bwd_dq, width=w, rows=h, extra_grid=(b,), args=args, meta=meta)
    if needs[1] or needs[2]:
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        args = (q, k, v, grad_out, lse, delta, dk, dv, c, d, h, w, r, qk_scale, sm_scale)
        _launch(_bwd_dkv, width=w, rows=h, extra_grid=(r, b), args=args, meta=meta)
    return dq, dk, dv


class _RestrictedAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, keys, values, radius, temperature, topk):
        q, k, v = query.contiguous(), keys.contiguous(), values.contiguous()
        out, lse = _forward(q, k, v, radius=radius, temperature=temperature, topk=topk)
        ctx.radius, ctx.temperature, ctx.topk = radius, temperature, topk
        if topk is None:
            ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.topk is not None:
            raise RuntimeError(
                "the triton backend's top-k restricted attention is forward-only (no backward): run it under "
                "torch.no_grad(), or use backend='tiled' (or 'unfold') for a differentiable top-k"
            )
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(
            q, k, v, out, lse, grad_out, radius=ctx.radius, temperature=ctx.temperature, needs=ctx.needs_input_grad[:3]
        )
        return dq, dk, dv, None, None, None


def restricted_attention_triton(
    query: Tensor, keys: Tensor, values: Tensor, *, radius: int, temperature: float = 1.0, topk: int | None = None
) -> Tensor:
    """Fused Triton restricted attention; differentiable w.r.t. all three inputs when ``topk`` is None.

    See :func:`corrflow.attention.functional.restricted_attention` for the contract.

    Args:
        query: (B, C, H, W) float32 / bfloat16 / float16, on CUDA (or CPU under TRITON_INTERPRET=1).
        keys: (B, R, C, H, W); cast to ``query``'s dtype.
        values: (B, R, D, H, W), any supported dtype.
        radius: M >= 0.
        temperature: logits are divided by it (finite, non-zero).
        topk: keep the k largest logits over all references and offsets; forward-only.

    Returns:
        (B, D, H, W) in ``torch.promote_types(query.dtype, values.dtype)``.
    """
    _check_inputs(query, keys, values, temperature)
    b, c, h, w = query.shape
    r, d = keys.shape[1], values.shape[2]
    if r < 1:
        raise ValueError("restricted attention needs at least one reference frame (R >= 1)")
    if topk is not None and topk < 1:
        raise ValueError(f"topk must be >= 1 or None, got {topk}")
    if topk is not None and topk >= r * (2 * radius + 1) ** 2:
        topk = None  # at least as many as there are candidates: every candidate is kept
    if query.numel() == 0 or values.numel() == 0:
        return query.new_zeros((b, d, h, w), dtype=torch.promote_types(query.dtype, values.dtype))
    return _RestrictedAttentionFunction.apply(query, keys.to(query.dtype), values, radius, temperature, topk)


# The dispatcher's precision rule (corrflow.attention.functional.attention_in_float32) upcasts
# 16-bit inputs to float32. Query and keys may stay 16-bit here: the kernel's logits are float32
# sums of exact products of 16-bit operands, the very logits of the upcast operands, without
# doubling the bytes read. Not under the interpreter, whose bfloat16 dot is wrong (see the tests).
restricted_attention_triton.fp32_logits_from_16bit_args = () if interpreting() else (0, 1)
