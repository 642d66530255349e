"""Label-propagation speed at 480p: ours against a straightforward dense-affinity implementation.

Both run the CRW protocol (first frame + 20 previous frames, radius 12 for the recent frames,
top-10, temperature 0.05, soft labels) with the CRW encoder (256-d at stride 8), end to end: every
frame goes through the encoder, then propagation.

- ``ours``: :class:`corrflow.propagation.LabelPropagator`, streaming: memory is bounded by the
  context (21 frames), whatever the video length; each recent frame's key and label regions are
  laid out once, when the frame enters the context.
- ``ours, regions cut every frame``: the same with ``region_cache_mb=0``, the earlier code path
  (every query frame cuts the 20 recent frames' regions out again): the baseline of the layout.
- ``dense``: what a direct implementation does (as CRW's test code): encode the whole video up
  front, then for each frame build the full (HW x 21*HW) affinity to its context, mask it to the
  radius, top-k, softmax. Its memory grows with the video (all features are kept).

Both compute the same protocol: the table's last column is the share of the last frame's cells
whose labels differ by more than 1e-3 between the two (float rounding can reorder two nearly tied
candidates at the top-k boundary), and the largest difference.

The largest video that fits is computed from measured per-frame memory: ``dense`` keeps
C x h x w floats per frame; ``ours`` keeps none beyond the context, so it has no length limit.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from corrflow.models.encoder import crw_encoder
from corrflow.utils.grid import pad_to_stride


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def dense_propagation(frames: torch.Tensor, first_labels: torch.Tensor, encoder, *, n_recent=20, radius=12, topk=10, temperature=0.05):
    """frames (T, 3, H, W), first_labels (D, h, w) -> (T, D, h, w) soft labels (dense affinities)."""
    frames = pad_to_stride(frames, encoder.stride)  # the same grid as LabelPropagator's
    feats = torch.cat([F.normalize(encoder(f[None]), dim=1) for f in frames])  # (T, C, h, w): whole video
    t, c, h, w = feats.shape
    yy, xx = torch.meshgrid(torch.arange(h, device=feats.device), torch.arange(w, device=feats.device), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    dy, dx = (yy[:, None] - yy[None]).float(), (xx[:, None] - xx[None]).float()
    near = (dy**2 + dx**2).sqrt() < radius  # (HW, HW): CRW's round window (MaskedAttention)
    labels = [first_labels]
    for i in range(1, t):
        ctx = [0] + [max(0, j) for j in range(i - n_recent, i)]
        keys = feats[ctx].flatten(2).permute(1, 0, 2).reshape(c, -1)  # (C, R*HW)
        vals = torch.stack([labels[j] for j in ctx]).flatten(2).permute(0, 2, 1).reshape(-1, first_labels.shape[0])
        aff = feats[i].flatten(1).t() @ keys / temperature  # (HW, R*HW)
        mask = torch.cat([torch.ones_like(near)] + [near] * n_recent, dim=1)
        aff = aff.masked_fill(~mask, float("-inf"))
        val, idx = aff.topk(topk, dim=1)
        wts = torch.softmax(val, dim=1)
        labels.append((wts[..., None] * vals[idx]).sum(1).t().reshape(-1, h, w))
    return torch.stack(labels)


def _time(fn, device) -> tuple[float, float]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return time.perf_counter() - t0, peak


def run_propagate_benchmark(
    *, frames: int, height: int, width: int, n_objects: int, device: str, skip_dense: bool = False, encoder: str = "crw",
    approximate: bool = False,
) -> list[dict]:
    from corrflow.models.encoder import corrflow_encoder
    from corrflow.propagation.propagator import LabelPropagator

    dev = torch.device(device)
    torch.manual_seed(0)
    if encoder == "lab":
        from corrflow.features.lab import LabFeatures

        enc = LabFeatures(stride=4).eval().to(dev)
    else:
        enc = (crw_encoder() if encoder == "crw" else corrflow_encoder()).eval().to(dev)
    video = torch.rand(frames, 3, height, width, device=dev)
    h, w = -(-height // enc.stride), -(-width // enc.stride)
    first = F.one_hot(torch.randint(0, n_objects + 1, (h, w), device=dev), n_objects + 1).permute(2, 0, 1).float()
    rows = []

    last = {}

    def ours(cache_mb: float | None = None, key: str = "ours", **approx):
        kwargs = {} if cache_mb is None else {"region_cache_mb": cache_mb}
        prop = LabelPropagator(enc, device=dev, **kwargs, **approx)
        prop.step(video[0], first)
        for f in video[1:]:
            last[key] = prop.step(f)

    ours()  # warm-up (allocations, kernels)
    secs, peak = _time(ours, dev)
    rows.append({"impl": "ours (streaming)", "frames": frames, "fps": frames / secs, "seconds": secs, "peak_gib": peak, "max_frames": "unbounded (context only)"})
    secs_b, peak_b = _time(lambda: ours(0, "baseline"), dev)
    diff_b = (last["ours"] - last["baseline"]).abs().amax(0)
    rows.append({"impl": "ours, regions cut every frame (earlier code)", "frames": frames, "fps": frames / secs_b, "seconds": secs_b,
                 "peak_gib": peak_b, "max_frames": "unbounded (context only)", "max_diff": float(diff_b.max()),
                 "cells_differing": float((diff_b > 1e-3).float().mean())})  # fmt: skip
    if approximate:  # protocol=crw_fast: not the protocol, so its labels are not compared
        secs_a, peak_a = _time(lambda: ours(None, "approximate", first_stride=2, n_recent=10), dev)
        rows.append({"impl": "approximate (crw_fast: first frame at half the grid, 10 recent frames)", "frames": frames,
                     "fps": frames / secs_a, "seconds": secs_a, "peak_gib": peak_a, "max_frames": "unbounded (context only)"})  # fmt: skip
    if not skip_dense:
        secs_d, peak_d = _time(lambda: last.update(dense=dense_propagation(video, first, enc)[-1]), dev)
        # the same protocol, so the same labels, up to float rounding: that can reorder two nearly
        # tied candidates at the top-k boundary, which changes a cell's labels outright
        diff = (last["ours"] - last["dense"]).abs().amax(0)
        rows[0]["max_diff"] = float(diff.max())  # against dense
        rows[0]["cells_differing"] = float((diff > 1e-3).float().mean())
        per_frame = {"crw": 256, "corrflow": 64, "lab": 3}[encoder] * h * w * 4 / 2**30  # GiB of features the dense version keeps per frame
        total = torch.cuda.get_device_properties(dev).total_memory / 2**30 if dev.type == "cuda" else None
        max_frames = int((total - peak_d + per_frame * frames) / per_frame) if total else f"memory / {per_frame:.4f} GiB"
        rows.append({"impl": "dense affinity", "frames": frames, "fps": frames / secs_d, "seconds": secs_d, "peak_gib": peak_d, "max_frames": max_frames})
    return rows


def format_rows(rows: list[dict], *, device: str, height: int, width: int, encoder: str = "crw") -> str:
    base = next((r for r in rows if r["impl"] == "dense affinity"), None)
    earlier = next((r for r in rows if r["impl"].startswith("ours, regions")), None)
    arch = {"crw": "CRW encoder, stride 8, 256-d", "corrflow": "CorrFlow encoder, stride 4, 64-d", "lab": "Lab colour, stride 4, 3-d"}[encoder]
    out = [f"label propagation, CRW protocol, {height}x{width}, {arch}, on {device}",
           "| implementation | frames | frames/s | vs dense | vs earlier code | peak GPU GiB | longest video | cells differing (vs dense / vs ours) |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ratio = f"{r['fps'] / base['fps']:.1f}x" if base else "-"
        ratio_e = f"{r['fps'] / earlier['fps']:.2f}x" if earlier else "-"
        peak = "-" if r["peak_gib"] != r["peak_gib"] else f"{r['peak_gib']:.2f}"  # NaN off-GPU
        diff = f"{r['cells_differing']:.2%} (max {r['max_diff']:.1e})" if "max_diff" in r else "-"
        out.append(f"| {r['impl']} | {r['frames']} | {r['fps']:.2f} | {ratio} | {ratio_e} | {peak} | {r['max_frames']} | {diff} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="benchmark.py propagate")
    p.add_argument("--frames", type=int, default=None, help="video length (default: 100 on GPU, 6 on CPU)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=854)
    p.add_argument("--objects", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-dense", action="store_true")
    p.add_argument("--encoder", choices=("crw", "corrflow", "lab"), default="crw",
                   help="crw: 256-d at stride 8; corrflow: 64-d at stride 4; lab: Lab colour (3-d) at stride 4")
    p.add_argument("--approximate", action="store_true", help="also time protocol=crw_fast's approximation (first_stride=2, n_recent=10)")
    p.add_argument("--profile", action="store_true", help="where one frame's time goes, end to end, on a real DAVIS-layout video "
                   "(corrflow/benchmarks/propagate_profile.py)")
    p.add_argument("--root", default=None, help="--profile: a DAVIS folder (default: one made from the embedded sample video)")
    p.add_argument("--sequence", default=None, help="--profile: its sequence (default: the first)")
    p.add_argument("--features", choices=("crw", "lab"), default="crw", help="--profile: the CRW encoder or Lab colour (stride 4)")
    p.add_argument("--short-side", type=int, default=None, help="--profile: make the sample video's frames this tall (default 480)")
    a = p.parse_args(argv)
    if a.profile:
        from corrflow.benchmarks.propagate_profile import format_profile, run_profile

        r = run_profile(root=a.root, sequence=a.sequence, features=a.features, frames=a.frames or 30, short_side=a.short_side, device=a.device)
        print(format_profile(r))
        return [r]
    frames = a.frames or (100 if a.device.startswith("cuda") else 6)
    rows = run_propagate_benchmark(frames=frames, height=a.height, width=a.width, n_objects=a.objects, device=a.device,
                                   skip_dense=a.skip_dense, encoder=a.encoder, approximate=a.approximate)  # fmt: skip
    print(format_rows(rows, device=a.device, height=a.height, width=a.width, encoder=a.encoder))
    return rows


if __name__ == "__main__":
    main()
