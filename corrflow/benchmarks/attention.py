"""Restricted-attention backends: median time, achieved bytes/s against the memory floor, peak memory.

Every backend runs in this one process on the same inputs, forward and forward + backward.
The floor is the time to move the bytes the op cannot avoid at ``peak_bandwidth`` (default an H100
SXM's 3.35e12 B/s):

* forward: read q, k, v once, write out once;
* forward + backward: that, plus read q, k, v and dout once and write dq, dk, dv once.

Times are medians over ``repeats`` after ``warmup`` calls (CUDA events on the GPU,
``time.perf_counter`` on the CPU). Peak memory is ``torch.cuda.max_memory_allocated`` during the
call minus what was allocated before it (the inputs); it is not measured on the CPU. A backend
that would not fit in memory, or (on the CPU) would run too long, is skipped with the reason.

Run: ``python tools/benchmark.py attention --preset cpu`` or
``python -m corrflow.benchmarks.attention --preset cpu``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from corrflow.attention import available_backends, restricted_attention

H100_SXM_BANDWIDTH = 3.35e12  # B/s, HBM3
_CPU_FLOPS = 2e10  # rough sustained float32 rate of a small CPU, for the "too long" guard only


@dataclass(frozen=True)
class AttentionSize:
    """One benchmark problem: query (B, C, H, W), keys (B, R, C, H, W), values (B, R, D, H, W)."""

    name: str
    batch: int
    refs: int
    channels: int
    values: int
    height: int
    width: int
    radius: int
    temperature: float = 0.05
    topk: int | None = None
    backward: bool = True  # also time forward + backward


PRESETS: dict[str, list[AttentionSize]] = {
    # DESIGN.md section 6: training (CorrFlow colourisation, 256x256 clips at stride 4) and 480p
    # propagation (CRW's 256-d encoder at stride 8; CorrFlow's 64-d one at stride 4).
    "gpu": [
        AttentionSize("train b24 c256 64x64 m6", 24, 1, 256, 16, 64, 64, 6),
        AttentionSize("prop480 s8 r20 c256 60x107 m8", 1, 20, 256, 16, 60, 107, 8),
        AttentionSize("prop480 s4 r20 c64 120x214 m8", 1, 20, 64, 16, 120, 214, 8),
        AttentionSize("prop480 s8 r20 top10", 1, 20, 256, 16, 60, 107, 8, topk=10, backward=False),
    ],
    # Small enough that reference, unfold and tiled all run on a 2-core CPU in well under a minute.
    "cpu": [
        AttentionSize("train-small b2 c64 32x32 m6", 2, 1, 64, 16, 32, 32, 6),
        AttentionSize("prop-small r5 c64 24x40 m8", 1, 5, 64, 16, 24, 40, 8),
        AttentionSize("prop-small r5 top10", 1, 5, 64, 16, 24, 40, 8, topk=10, backward=False),
    ],
}


def _elem(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def floor_bytes(size: AttentionSize, dtype: torch.dtype, *, backward: bool) -> int:
    """Bytes the op must move: forward reads q, k, v and writes out; backward also reads q, k, v,
    dout and writes dq, dk, dv."""
    hw = size.height * size.width
    q = size.batch * size.channels * hw
    k = size.batch * size.refs * size.channels * hw
    v = size.batch * size.refs * size.values * hw
    out = size.batch * size.values * hw
    n = q + k + v + out
    if backward:
        n += (q + k + v + out) + (q + k + v)
    return n * _elem(dtype)


def _estimate(backend: str, size: AttentionSize, dtype: torch.dtype, *, backward: bool) -> tuple[float, float]:
    """(working bytes, dense-equivalent flops) of one call: what decides skipping, not what is reported."""
    b, r, c, d = size.batch, size.refs, size.channels, size.values
    hw, kk = size.height * size.width, (2 * size.radius + 1) ** 2
    e, grad = max(_elem(dtype), 4), (3 if backward else 1)  # 16-bit inputs are computed in float32
    if backend == "reference":  # the full (HW x R*HW) affinity, a mask, softmax and its saved copies
        return b * hw * r * hw * (e * 3 * grad + 2), 2.0 * b * hw * r * hw * (c + d) * grad
    if backend == "unfold":  # every key's window materialised, C x K x HW per reference (x2 for the product)
        return b * r * (c + d) * kk * hw * e * 2 * grad, 2.0 * b * hw * r * kk * (c + d) * grad
    if backend == "tiled":
        tile = 8
        s2, nt = (tile + 2 * size.radius) ** 2, math.ceil(size.height / tile) * math.ceil(size.width / tile)
        return b * nt * r * s2 * (tile * tile * 2 + c + d) * e * grad, 2.0 * b * nt * tile * tile * r * s2 * (c + d) * grad
    return 0.0, 0.0  # fused backends (flex, triton): memory is the inputs and outputs


def _memory_budget(device: torch.device) -> float:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return 0.8 * free
    return 0.4 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _skip_reason(backend: str, size: AttentionSize, dtype: torch.dtype, device: torch.device, *, backward: bool,
                 budget: float, max_seconds: float) -> str | None:  # fmt: skip
    if size.topk is not None and backend == "flex":
        return "no top-k in flex"
    if size.topk is not None and backward:
        return "top-k is forward-only here"
    need, flops = _estimate(backend, size, dtype, backward=backward)
    if need > budget:
        return f"needs ~{need / 2**30:.1f} GiB > budget {budget / 2**30:.1f} GiB"
    if device.type == "cpu" and flops / _CPU_FLOPS > max_seconds:
        return f"~{flops / _CPU_FLOPS:.0f} s a call on this CPU (> {max_seconds:g} s)"
    return None


def _inputs(size: AttentionSize, dtype: torch.dtype, device: torch.device, *, requires_grad: bool):
    g = torch.Generator(device=device).manual_seed(0)
    hw = (size.height, size.width)
    q = torch.nn.functional.normalize(torch.randn(size.batch, size.channels, *hw, device=device, generator=g), dim=1)
    k = torch.nn.functional.normalize(torch.randn(size.batch, size.refs, size.channels, *hw, device=device, generator=g), dim=2)
    v = torch.randn(size.batch, size.refs, size.values, *hw, device=device, generator=g).softmax(2)
    return [t.to(dtype).requires_grad_(requires_grad) for t in (q, k, v)]


def _time_call(fn, *, device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Seconds of each of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def run_attention_benchmark(
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    sizes: list[AttentionSize] | str,
    backends: list[str] | None = None,
    repeats: int = 20,
    warmup: int = 3,
    peak_bandwidth: float = H100_SXM_BANDWIDTH,
    max_seconds: float = 5.0,
) -> list[dict]:
    """Time every backend on every size, forward and (where the size asks) forward + backward.

    Args:
        device: where to run.
        dtype: of q, k and v.
        sizes: a preset name (see ``PRESETS``) or a list of ``AttentionSize``.
        backends: default ``available_backends(device)``.
        peak_bandwidth: B/s, for the floor time.
        max_seconds: on the CPU, skip backends estimated to take longer than this per call.

    Returns:
        One dict per (size, backend, mode): the size's fields, ``backend``, ``mode`` ('fwd' or
        'fwd+bwd'), ``dtype``, ``device``, ``median_ms``, ``floor_ms``, ``achieved_GBps``,
        ``floor_fraction`` (floor / median), ``peak_MiB`` (None on CPU) and ``skipped`` (a reason,
        or None; the timing fields are None when skipped or failed).
    """
    device = torch.device(device)
    sizes = PRESETS[sizes] if isinstance(sizes, str) else list(sizes)
    backends = list(backends) if backends is not None else available_backends(device)
    rows = []
    for size in sizes:
        modes = [False, True] if size.backward else [False]
        for backward in modes:
            floor_b = floor_bytes(size, dtype, backward=backward)
            for backend in backends:
                row = {**asdict(size), "backend": backend, "mode": "fwd+bwd" if backward else "fwd",
                       "dtype": str(dtype).removeprefix("torch."), "device": str(device), "floor_ms": 1e3 * floor_b / peak_bandwidth,
                       "median_ms": None, "achieved_GBps": None, "floor_fraction": None, "peak_MiB": None, "skipped": None}  # fmt: skip
                budget = _memory_budget(device)
                row["skipped"] = _skip_reason(backend, size, dtype, device, backward=backward, budget=budget, max_seconds=max_seconds)
                if row["skipped"] is None:
                    try:
                        _measure(row, backend, size, dtype, device, backward=backward, repeats=repeats, warmup=warmup, floor_b=floor_b)
                    except (RuntimeError, ValueError, NotImplementedError) as err:  # OOM, unsupported: report, go on
                        row["skipped"] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                rows.append(row)
    return rows


def _measure(row: dict, backend: str, size: AttentionSize, dtype: torch.dtype, device: torch.device, *,
             backward: bool, repeats: int, warmup: int, floor_b: int) -> None:  # fmt: skip
    q, k, v = _inputs(size, dtype, device, requires_grad=backward)
    opts = {"radius": size.radius, "temperature": size.temperature, "topk": size.topk, "backend": backend}
    grad = torch.ones((size.batch, size.values, size.height, size.width), device=device, dtype=dtype) if backward else None

    def call():
        if backward:
            out = restricted_attention(q, k, v, **opts)
            torch.autograd.grad(out, (q, k, v), grad.to(out.dtype))
        else:
            with torch.no_grad():
                restricted_attention(q, k, v, **opts)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        call()  # compile / autotune outside the peak-memory window
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        row["peak_MiB"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    median = statistics.median(_time_call(call, device=device, repeats=repeats, warmup=warmup))
    row.update(median_ms=1e3 * median, achieved_GBps=floor_b / median / 1e9, floor_fraction=row["floor_ms"] / (1e3 * median))


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table, one line per row, sizes separated by blank lines."""
    head = f"{'size':34} {'mode':8} {'backend':10} {'median ms':>11} {'floor ms':>9} {'GB/s':>9} {'% floor':>8} {'peak MiB':>9}  note"
    lines = [head, "-" * len(head)]
    last = None
    for row in rows:
        if last is not None and row["name"] != last:
            lines.append("")
        last = row["name"]

        def num(key, fmt):
            return format(row[key], fmt) if row[key] is not None else "-"

        pct = f"{100 * row['floor_fraction']:.2f}" if row["floor_fraction"] is not None else "-"
        lines.append(
            f"{row['name']:34} {row['mode']:8} {row['backend']:10} {num('median_ms', '11.3f')} {num('floor_ms', '9.4f')} "
            f"{num('achieved_GBps', '9.2f')} {pct:>8} {num('peak_MiB', '9.1f')}  {row['skipped'] or ''}"
        )
    if rows:
        lines.append(f"[{rows[0]['device']}, {rows[0]['dtype']}; floor = unavoidable bytes / peak bandwidth]")
    return "\n".join(lines)


def main_rows(*, preset: str | None = None, backends: list[str] | None = None, dtype: str | None = None,
              repeats: int = 20, warmup: int = 3, peak_bandwidth: float = H100_SXM_BANDWIDTH) -> list[dict]:  # fmt: skip
    """What ``tools/benchmark.py attention`` runs: defaults are the gpu preset in bf16 on CUDA,
    the cpu preset in float32 otherwise."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = preset or ("gpu" if device.type == "cuda" else "cpu")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    dtype = dtype or ("bfloat16" if device.type == "cuda" else "float32")
    return run_attention_benchmark(
        device=device, dtype=getattr(torch, dtype), sizes=preset, backends=backends, repeats=repeats,
        warmup=warmup, peak_bandwidth=peak_bandwidth,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, choices=sorted(PRESETS))
    p.add_argument("--backends", nargs="*", default=None)
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--peak-bandwidth", type=float, default=H100_SXM_BANDWIDTH, help="B/s for the floor time")
    args = p.parse_args(argv)
    rows = main_rows(preset=args.preset, backends=args.backends, dtype=args.dtype, repeats=args.repeats,
                     warmup=args.warmup, peak_bandwidth=args.peak_bandwidth)  # fmt: skip
    print(format_table(rows))


if __name__ == "__main__":
    main()
