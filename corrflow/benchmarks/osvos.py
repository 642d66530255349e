"""OSVOS speed at 480p: seconds for the one-shot fine-tuning of a video (per object, for a number
of steps) and seconds per frame for the inference, through
:class:`corrflow.propagation.osvos.OSVOSVideoSegmenter` as ``tools/propagate.py method=osvos`` runs it.

Synthetic 480x854 frames with two moving discs (:func:`corrflow.benchmarks.stm.synthetic_video`),
random weights (speed does not depend on them). Prints a table; ``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import torch

from corrflow.benchmarks.propagate import _sync
from corrflow.benchmarks.stm import synthetic_video
from corrflow.models.backbone import SegmentationBackbone
from corrflow.models.segmenters.osvos import OSVOSNet
from corrflow.propagation.labels import masks_to_onehot
from corrflow.propagation.osvos import OSVOSVideoSegmenter


def run(
    *, arch: str, steps: int, frames: int, objects: int, size: tuple[int, int], device: str | None, snapping: bool = False,
    batch_frames: int = 8, short_side: int | None = None,
) -> dict:  # fmt: skip
    """One video: the first frame's step (the one-shot fine-tuning of every object), then ``frames - 1``
    frames, ``batch_frames`` at a time as the run loop hands them."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    backbone = SegmentationBackbone(init="random", arch=arch, finest_stride=4, min_stride=4, max_stride=32, seed=0)
    parent = OSVOSNet(backbone=backbone)
    contour = OSVOSNet(backbone=SegmentationBackbone(init="random", arch=arch, finest_stride=4, min_stride=4, max_stride=32, seed=1)) if snapping else None
    seg = OSVOSVideoSegmenter(parent, steps=steps, optimizer=partial(torch.optim.Adam, lr=1e-4), contour=contour, device=dev,
                              batch_frames=batch_frames, short_side=short_side)  # fmt: skip
    video, first = synthetic_video(frames, size)
    first = first.clamp(max=objects)
    labels = masks_to_onehot(first, list(range(1, objects + 1)))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _sync(dev)
    t0 = time.perf_counter()
    seg.step(video[0].to(dev), labels.to(dev))
    _sync(dev)
    t1 = time.perf_counter()
    for chunk in video[1:].split(batch_frames):
        seg.step_many(chunk.to(dev))
    _sync(dev)
    t2 = time.perf_counter()
    return {
        "device": str(dev), "arch": arch, "size": list(size), "objects": objects, "steps": steps, "snapping": snapping,
        "batch_frames": batch_frames, "short_side": short_side,
        "finetune_s": t1 - t0, "finetune_s_per_step_object": (t1 - t0) / max(steps * objects, 1),
        "s_per_frame": (t2 - t1) / max(frames - 1, 1), "frames": frames,
        "peak_gpu_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
    }  # fmt: skip


def format_table(rows: list[dict]) -> str:
    r0 = rows[0]
    lines = [
        f"OSVOS at {r0['size'][0]}x{r0['size'][1]}" + (f" (working short side {r0['short_side']})" if r0["short_side"] else "")
        + f", {r0['batch_frames']} frames a pass, {r0['device']}, random weights",
        "| backbone | objects | one-shot steps | one-shot s/video | s/step/object | snapping | s/frame | peak GPU GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gib = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else "-"
        lines.append(
            f"| {r['arch']} | {r['objects']} | {r['steps']} | {r['finetune_s']:.2f} | {r['finetune_s_per_step_object']:.3f} | "
            f"{'yes' if r['snapping'] else 'no'} | {r['s_per_frame']:.3f} | {gib} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="benchmark.py osvos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="*", default=["corrflow", "crw"], help="backbones: corrflow | crw | lite0")
    p.add_argument("--steps", type=int, default=None, help="one-shot steps (default: 100 on CUDA, 5 on the CPU)")
    p.add_argument("--frames", type=int, default=None, help="video length (default: 20 on CUDA, 3 on the CPU)")
    p.add_argument("--objects", type=int, default=1)
    p.add_argument("--snapping", action="store_true", help="also time boundary snapping (a second network and the watershed)")
    p.add_argument("--size", type=int, nargs=2, default=[480, 854])
    p.add_argument("--batch-frames", type=int, default=8, help="frames a forward pass (method.batch_frames)")
    p.add_argument("--short-side", type=int, default=None, help="the working size's shorter side (method.short_side; default: the frame's)")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    cuda = (a.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    steps, frames = a.steps or (100 if cuda else 5), a.frames or (20 if cuda else 3)
    rows = []
    for arch in a.archs:
        for snap in (False, True) if a.snapping else (False,):
            rows.append(run(arch=arch, steps=steps, frames=frames, objects=a.objects, size=tuple(a.size), device=a.device, snapping=snap,
                            batch_frames=a.batch_frames, short_side=a.short_side))  # fmt: skip
    print(format_table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
