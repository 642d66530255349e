"""STM segmentation speed at 480p: bounded memory (ours) against the paper's unbounded memory bank.

Both are :class:`corrflow.models.segmenters.stm.STMInference` on the same network and the same
frames; only the memory rule differs:

- ``bounded``: the first frame, every 5th frame (the newest ones) and the previous frame, at most
  ``--max-memory`` frames (20, the default of ``tools/propagate.py method=stm``).
- ``unbounded``: the paper's rule without a cap, every 5th frame kept for the whole video: at
  frame t it reads about t / 5 + 2 frames, so its time and memory grow with the video.

Each is timed per frame over a video of ``--frames`` synthetic 480x854 frames (moving textured
blobs, two objects), and, to show a long video without running one, with its memory bank filled
to the size it has at frame ``--at-frame`` (the keys and values of real encoded frames, repeated).
Weights are random: speed does not depend on them. Prints a table; ``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from corrflow.benchmarks.propagate import _sync
from corrflow.models.backbone import SegmentationBackbone
from corrflow.models.segmenters.stm import STMInference, STMSegmenter

WIDTHS = {"paper": dict(key_dim=128, value_dim=512, decoder_dim=256), "narrow": dict(key_dim=32, value_dim=64, decoder_dim=32)}


def synthetic_video(n: int, size: tuple[int, int], *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, H, W) frames in [0, 1] with two moving discs, and frame 0's id map (H, W) (ids 0, 1, 2)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    base = torch.nn.functional.interpolate(torch.rand(1, 3, h // 16, w // 16, generator=g), size=size, mode="bilinear")[0]
    frames, first = [], None
    for t in range(n):
        ids = torch.zeros(h, w, dtype=torch.long)
        for k, (cy, cx, r) in enumerate([(h * 0.4, w * 0.3 + 3 * t, h * 0.15), (h * 0.6, w * 0.7 - 2 * t, h * 0.1)], start=1):
            ids[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = k
        colours = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.2, 0.1], [0.1, 0.3, 0.9]])[ids].permute(2, 0, 1)
        frames.append(torch.where(ids[None] > 0, colours, base.roll(t, dims=-1)))
        first = ids if first is None else first
    return torch.stack(frames), first


def build(arch: str, widths: str, device: torch.device, kv_stage: str | None = "auto") -> STMSegmenter:
    backbone = SegmentationBackbone(init="random", arch=arch, finest_stride=4, min_stride=8, max_stride=16, seed=0)
    return STMSegmenter(backbone=backbone, kv_stage=kv_stage, **WIDTHS[widths]).to(device).eval()


def time_video(net: STMSegmenter, frames: torch.Tensor, first: torch.Tensor, *, max_memory: int, device: torch.device) -> dict:
    """Seconds per frame (frame 0's memorisation excluded) and the largest memory bank read."""
    inf = STMInference(net, every=5, max_frames=max_memory, device=device)
    inf.step(frames[0].to(device), first.to(device))
    _sync(device)
    start, most = time.perf_counter(), 0
    for f in frames[1:]:
        most = max(most, len(inf.memory_frames))
        inf.step(f.to(device))
    _sync(device)
    return {"s_per_frame": (time.perf_counter() - start) / (len(frames) - 1), "memory_frames": most}


def time_at_frame(net: STMSegmenter, frames: torch.Tensor, first: torch.Tensor, *, memory_frames: int, device: torch.device, repeats: int) -> float:
    """Seconds for one frame whose memory bank holds ``memory_frames`` frames."""
    inf = STMInference(net, every=1, max_frames=10**9, device=device)
    inf.step(frames[0].to(device), first.to(device))
    inf.step(frames[1].to(device))  # one real memory entry of a predicted frame
    _, key, value = inf._previous
    inf._periodic = [(i, key, value) for i in range(1, memory_frames)]
    inf._previous = None
    inf.every = 10**9  # the timed steps add nothing to the bank
    inf.step(frames[2].to(device))  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        inf.step(frames[2].to(device))
    _sync(device)
    return (time.perf_counter() - start) / repeats


def run(
    *, frames: int, at_frame: int, max_memory: int, arch: str, widths: str, size: tuple[int, int], device: str | None, repeats: int, kv_stage: str | None = "auto"
) -> list[dict]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net = build(arch, widths, dev, kv_stage)
    video, first = synthetic_video(frames, size)
    rows = []
    with torch.no_grad():
        for name, cap in (("bounded", max_memory), ("unbounded", 10**9)):
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            row = {"memory": name, "device": str(dev), "arch": arch, "kv_stage": net.kv_stage, "widths": widths, "size": list(size), "frames": frames}
            row.update(time_video(net, video, first, max_memory=cap, device=dev))
            long_bank = min(cap, at_frame // 5 + 2)
            row["at_frame"], row["memory_frames_at_frame"] = at_frame, long_bank
            row["s_per_frame_at_frame"] = time_at_frame(net, video, first, memory_frames=long_bank, device=dev, repeats=repeats)
            row["peak_gpu_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    base = next(r for r in rows if r["memory"] == "unbounded")
    lines = [
        f"STM at {rows[0]['size'][0]}x{rows[0]['size'][1]}, {rows[0]['arch']} backbone, keys and values from "
        f"{rows[0].get('kv_stage') or 'the coarsest map'}, {rows[0]['widths']} widths, {rows[0]['device']}",
        f"| memory | frames read (video of {rows[0]['frames']}) | s/frame | frames read at frame {rows[0]['at_frame']} | s/frame there | vs unbounded there | peak GPU GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gib = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else "-"
        lines.append(
            f"| {r['memory']} | {r['memory_frames']} | {r['s_per_frame']:.3f} | {r['memory_frames_at_frame']} | "
            f"{r['s_per_frame_at_frame']:.3f} | {base['s_per_frame_at_frame'] / r['s_per_frame_at_frame']:.2f}x | {gib} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="benchmark.py stm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=None, help="video length (default: 100 on CUDA, 6 on the CPU)")
    p.add_argument("--at-frame", type=int, default=None, help="the long-video point whose memory bank is simulated (default: 1000 on CUDA, 200 on the CPU)")
    p.add_argument("--max-memory", type=int, default=20)
    p.add_argument("--arch", default="corrflow", help="backbone: corrflow | crw | lite0")
    p.add_argument("--kv-stage", default="auto", help="what STM's keys and values read (model.net.kv_stage): auto (the default: layer4 on the CorrFlow encoder), "
                   "a side stage's name (layer4), or none (the coarsest map)")
    p.add_argument("--widths", default="paper", choices=sorted(WIDTHS))
    p.add_argument("--size", type=int, nargs=2, default=[480, 854])
    p.add_argument("--device", default=None)
    p.add_argument("--repeats", type=int, default=None, help="timed steps at --at-frame (default: 10 on CUDA, 1 on the CPU)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    cuda = (a.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    rows = run(
        frames=a.frames or (100 if cuda else 6), at_frame=a.at_frame or (1000 if cuda else 200), max_memory=a.max_memory, arch=a.arch, widths=a.widths,
        size=tuple(a.size), device=a.device, repeats=a.repeats or (10 if cuda else 1), kv_stage=None if a.kv_stage.lower() in ("none", "null") else a.kv_stage,
    )
    print(format_table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
