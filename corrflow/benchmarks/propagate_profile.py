"""Where one frame of label propagation spends its time, end to end, on a real DAVIS-layout video:
decoding, the encoder, the affinities, the top-k, the label maps, the PNG and the picture.

``python tools/benchmark.py propagate --profile [--root DAVIS --sequence car-shadow] [--features crw|lab]``

The real tool's code runs (``propagate_video`` with the CRW protocol's config) under PyTorch's
profiler, every stage named by the ``record_function`` labels in the code (``propagate.*``), in
one thread (``background=0``) so that each stage is timed alone; then the same video again with the
reader and writer threads (the default), whose frames/s is what a run gets. Beside it, the
machine's measured matrix-multiply rate and what the affinities' arithmetic costs at that rate:
the floor the exact protocol cannot beat on this machine.

Without ``--root``, a DAVIS-2016 tree is made from the embedded sample video (bikes.mp4, resized
to 854 x 480 JPEGs, an ellipse as the first mask): real decoding of real JPEG files.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

STAGES = {
    "propagate.decode": "decode + resize the frame (PIL)",
    "propagate.encoder": "encoder",
    "propagate.layout": "lay out the new frame's key regions",
    "propagate.global_affinity": "affinities to the first frame (matmul)",
    "propagate.global_topk": "top-k of the first frame + gather",
    "propagate.local_affinity": "affinities to 20 recent frames (matmul + window)",
    "propagate.local_topk": "top-k of the recent frames + gather",
    "propagate.merge": "merge, softmax, weighted labels",
    "propagate.labels_to_ids": "labels to the frame's size, arg-max to ids",
    "propagate.png": "palette PNG writing",
    "propagate.overlay": "overlay picture",
}


def make_davis_tree(root: Path, *, frames: int = 30, size: tuple[int, int] = (480, 854)) -> tuple[Path, str]:
    """A DAVIS-2016-layout folder with one sequence made from the embedded sample video."""
    from PIL import Image

    from corrflow.data.vos.clip import load_clip, sample_clips
    from corrflow.utils.io import write_indexed_png

    clip = load_clip(sample_clips()["bikes.mp4"], max_frames=frames, short_side=None)
    name = "bikes"
    jpg, ann = root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name
    jpg.mkdir(parents=True)
    ann.mkdir(parents=True)
    for t in range(len(clip)):
        Image.fromarray(clip.frame(t)).resize(size[::-1], Image.BILINEAR).save(jpg / f"{t:05d}.jpg", quality=90)
    yy, xx = np.mgrid[: size[0], : size[1]]
    mask = (((yy - size[0] * 0.55) / (size[0] * 0.25)) ** 2 + ((xx - size[1] * 0.5) / (size[1] * 0.12)) ** 2 < 1).astype(np.uint8)
    write_indexed_png(ann / "00000.png", mask)
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2016" / "val.txt").write_text(f"{name}\n")
    return root, name


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null (C++ libraries write there directly)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def matmul_rate(n: int, c: int, device: torch.device) -> float:
    """GFLOP/s of an (n x c) @ (c x n) float32 matrix multiply: the affinities' own shape."""
    a, b = torch.randn(n, c, device=device), torch.randn(c, n, device=device)
    for _ in range(2):
        a @ b
    reps = max(2, int(4e10 // (2 * n * n * c)))
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n * n * c * reps / (time.perf_counter() - t0) / 1e9


def run_profile(*, root: str | None, sequence: str | None, features: str, frames: int, short_side: int | None, device: str) -> dict:
    from hydra.utils import instantiate

    from corrflow.features.lab import LabFeatures
    from corrflow.models.encoder import crw_encoder
    from corrflow.propagation.functional import region_keys
    from corrflow.propagation.methods import label_propagation
    from corrflow.propagation.run import propagate_video
    from corrflow.utils.conf import compose_propagate

    dev = torch.device(device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="corrflow-profile-") as tmp:
        if root is None:
            size = (480, 854) if short_side is None else (short_side, round(short_side * 854 / 480))
            root_path, name = make_davis_tree(Path(tmp) / "DAVIS", frames=frames, size=size)
        elif short_side is not None:
            raise ValueError("--short-side makes the sample video's frames at that size; with --root the frames' own size is used")
        else:
            root_path, name = Path(root), sequence
        overrides = ["task=davis2016", f"data.root={root_path}", "protocol=crw"]
        cfg = compose_propagate(overrides)
        dataset = instantiate(cfg.task.dataset)
        videos = {v.name: v for v in dataset}
        name = name or next(iter(videos))
        if name not in videos:
            raise ValueError(f"no sequence {name!r} in {root_path}: {', '.join(videos)}")
        video = videos[name]
        extractor = crw_encoder() if features == "crw" else LabFeatures(stride=4)
        targets = instantiate(cfg.task.targets, validate_annotations=False, keyframes=None, late_objects=False, submission=None)
        recorder_factory = instantiate(cfg.overlay)

        def once(background: int, out: Path):
            segmenter = label_propagation(features=extractor, propagator=instantiate(cfg.protocol.propagator), device=dev, targets=targets)
            recorder = recorder_factory(n_frames=len(video))  # the tool's pictures (strip and GIF frames)
            t0 = time.perf_counter()
            with torch.no_grad():
                n = propagate_video(video, segmenter=segmenter, targets=targets, results_dir=out, recorder=recorder, progress=False,
                                    background=background)  # fmt: skip
            return n, time.perf_counter() - t0, segmenter

        once(0, Path(tmp) / "warm")  # warm-up: allocations, caches
        n, secs_serial, segmenter = once(0, Path(tmp) / "serial")
        n2, secs_bg, _ = once(2, Path(tmp) / "overlapped")
        from torch.profiler import ProfilerActivity, profile

        cuda = dev.type == "cuda"  # then a stage's time is its kernels' GPU time (the CPU only launches them)
        prof = profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])])
        with _quiet_stderr():  # the profiler's C++ start/stop lines
            prof.start()
        try:
            _, secs_profiled, _ = once(0, Path(tmp) / "profiled")
        finally:
            with _quiet_stderr():
                prof.stop()
        totals = {
            e.key: (max(e.cpu_time_total, getattr(e, "device_time_total", 0)) if cuda else e.cpu_time_total) / 1e6
            for e in prof.key_averages()
            if e.key in STAGES
        }
        hw = tuple(video.frame(0).shape[:2])
    stride = extractor.stride
    h, w = -(-hw[0] // stride), -(-hw[1] // stride)
    c = 256 if features == "crw" else 3
    u = len(region_keys(12, 8, "disc"))
    tiles = -(-h // 8) * -(-w // 8)
    flops = 2 * (h * w) ** 2 * c + 2 * tiles * 64 * 20 * u * c  # first frame whole + 20 recent frames' regions
    rate = matmul_rate(h * w, 256, dev) if features == "crw" else float("nan")
    return {
        "sequence": name, "frames": n, "size": hw, "grid": (h, w), "features": features, "stages": totals,
        "profiled_seconds": secs_profiled, "serial_fps": n / secs_serial, "overlapped_fps": n2 / secs_bg, "serial_seconds": secs_serial, "overlapped_seconds": secs_bg,
        "affinity_gflop": flops / 1e9, "matmul_gflops": rate, "threads": torch.get_num_threads(), "device": str(dev),
    }  # fmt: skip


def format_profile(r: dict) -> str:
    n = r["frames"]
    prof = r["profiled_seconds"]  # the stages' shares are of the profiled run (the profiler adds its own cost)
    lines = [
        f"one frame of CRW-protocol label propagation, {r['features']} features, {r['size'][0]}x{r['size'][1]} frames "
        f"({r['grid'][0]}x{r['grid'][1]} cells), sequence {r['sequence']} ({n} frames), {r['threads']} threads on {r['device']}",
        "| stage | share of the time | ms a frame (share x the unprofiled time) |",
        "|---|---|---|",
    ]
    named = 0.0
    per_frame = r["serial_seconds"] / n
    for key, label in STAGES.items():
        s = r["stages"].get(key, 0.0)
        named += s
        lines.append(f"| {label} | {s / prof:.0%} | {1000 * per_frame * s / prof:.1f} |")
    rest = max(0.0, prof - named)
    lines.append(f"| other (Python, the first frame, bookkeeping) | {rest / prof:.0%} | {1000 * per_frame * rest / prof:.1f} |")
    lines.append(f"| **all, one thread for everything (background=0)** | | **{1000 * per_frame:.0f}** ({r['serial_fps']:.2f} frames/s) |")
    lines.append(f"| **all, reader and writer threads (the default)** | | **{1000 * r['overlapped_seconds'] / n:.0f}** "
                 f"({r['overlapped_fps']:.2f} frames/s, {r['overlapped_fps'] / r['serial_fps']:.2f}x) |")  # fmt: skip
    if r["matmul_gflops"] == r["matmul_gflops"]:
        floor = r["affinity_gflop"] / r["matmul_gflops"]
        lines.append("")
        lines.append(f"measured float32 matrix multiply ({r['grid'][0] * r['grid'][1]} x 256 @ 256 x {r['grid'][0] * r['grid'][1]}): "
                     f"{r['matmul_gflops']:.0f} GFLOP/s; the affinities computed a frame: {r['affinity_gflop']:.1f} GFLOP "
                     f"(first frame whole + 20 frames' tile regions), {1000 * floor:.0f} ms at that rate")  # fmt: skip
    return "\n".join(lines)
