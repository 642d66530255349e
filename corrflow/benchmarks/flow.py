"""How well a feature extractor's local correlation reads motion: end-point error on real frames
warped by known random affine motions, and MotionSqueeze's cost beside its backbone's forward pass.

``epe``: for each real frame (every ``--every``-th frame of each sequence, resized so its longer
side is ``--max-side``) a random affine map A is drawn (rotation within +-``--rotate`` degrees,
scale within 1 +- ``--scale``, shear within +-``--shear``, translation within +-``--shift``
pixels, about the frame's centre); frame 1 is frame 0 warped by it (bilinear), so the content at
pixel p of frame 0 is at A(p) in frame 1 and the true flow is A(p) - p. The flow is read by
:func:`corrflow.models.motion.displacement.motion_from_features` (tools/flow.py's reading) on each
``--features`` extractor's features (conf/features configs), at the centre of every feature cell
((c + 0.5) * stride - 0.5 pixels), and scored where A(p) lies inside frame 1 by the end-point
error in pixels: mean, median, and the share under ``stride`` pixels (one cell). The zero flow's
error is printed beside it. Cells whose true motion leaves the window (radius x stride pixels)
are counted and excluded.

``cost``: seconds of a backbone's forward pass on a clip with and without MotionSqueeze inserted
after layer2 (CPU or CUDA, random weights).

    python tools/benchmark.py flow epe --frames ../shared/data/davis2016-dev/JPEGImages/480p --features lab random
    python tools/benchmark.py flow cost --arch crw --size 224 224 --n-frames 8
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from corrflow.data.video.sources import list_frames
from corrflow.models.motion.displacement import motion_from_features
from corrflow.utils.grid import pad_to_stride

CONF = Path(__file__).resolve().parents[2] / "conf" / "features"


def random_affine(rng: np.random.Generator, size: tuple[int, int], *, rotate: float, scale: float, shear: float, shift: float) -> np.ndarray:
    """(2, 3) affine map in pixel coordinates (x, y), about the frame's centre."""
    h, w = size
    a = math.radians(rng.uniform(-rotate, rotate))
    s = 1.0 + rng.uniform(-scale, scale)
    sh = math.radians(rng.uniform(-shear, shear))
    m = s * np.array([[math.cos(a), -math.sin(a + sh)], [math.sin(a), math.cos(a + sh)]])
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    t = c - m @ c + rng.uniform(-shift, shift, size=2)
    return np.concatenate([m, t[:, None]], axis=1)


def warp(image: torch.Tensor, affine: np.ndarray) -> torch.Tensor:
    """(3, H, W) -> (3, H, W): frame 1 with frame1(A p) = frame0(p), bilinear, zeros outside."""
    _, h, w = image.shape
    inv = np.linalg.inv(np.vstack([affine, [0, 0, 1]]))[:2]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    src = torch.einsum("ij,jhw->ihw", torch.from_numpy(inv), torch.stack([xx, yy, torch.ones_like(xx)]))  # (2, H, W) x, y
    grid = torch.stack([(2 * src[0] + 1) / w - 1, (2 * src[1] + 1) / h - 1], dim=-1)[None].float()
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def true_flow(affine: np.ndarray, grid: tuple[int, int], stride: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(2, h, w) true flow in pixels at feature-cell centres, and (h, w) where A(p) is inside the frame."""
    h, w = grid
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) * stride - 0.5
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) * stride - 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    a = torch.from_numpy(affine)
    tx = a[0, 0] * xx + a[0, 1] * yy + a[0, 2]
    ty = a[1, 0] * xx + a[1, 1] * yy + a[1, 2]
    inside = (tx >= 0) & (tx <= size[1] - 1) & (ty >= 0) & (ty <= size[0] - 1) & (xx <= size[1] - 1) & (yy <= size[0] - 1)
    return torch.stack([tx - xx, ty - yy]), inside


def load_frames(roots: list[str], *, every: int, max_side: int, limit: int) -> list[tuple[str, torch.Tensor]]:
    """(name, (3, H, W) in [0, 1]) for every ``every``-th frame of each frame folder under ``roots``."""
    folders = []
    for root in roots:
        p = Path(root)
        folders += [p] if list_frames(p) else sorted(d for d in p.iterdir() if d.is_dir() and list_frames(d))
    if not folders:
        raise FileNotFoundError(f"no frame folders under {roots}")
    out = []
    for folder in folders:
        for f in list_frames(folder)[::every]:
            with Image.open(f) as im:
                im = im.convert("RGB")
                s = max_side / max(im.size)
                if s < 1:
                    im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.Resampling.BILINEAR)
                out.append((f"{folder.name}/{f.name}", torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255))
            if len(out) >= limit:
                return out
    return out


def build_features(name: str, ckpt: str | None):
    cfg = OmegaConf.load(CONF / f"{name.split(':')[0]}.yaml")
    if name.startswith("random:"):  # random:crw
        cfg.extractor.arch = name.split(":")[1]
    if "path" in cfg.extractor:
        cfg.extractor.path = ckpt
    return instantiate(cfg.extractor).eval()


@torch.no_grad()
def run_epe(*, frames: list[tuple[str, torch.Tensor]], features: list[str], ckpt: str | None, radius: int, estimator: str, seed: int,
            rotate: float, scale: float, shear: float, shift: float) -> list[dict]:  # fmt: skip
    rng = np.random.default_rng(seed)
    pairs = []
    for name, img in frames:
        affine = random_affine(rng, tuple(img.shape[1:]), rotate=rotate, scale=scale, shear=shear, shift=shift)
        pairs.append((name, img, warp(img, affine), affine))
    rows = []
    for feat_name in features:
        extractor = build_features(feat_name, ckpt)
        s = int(extractor.stride)
        errs, zero_errs, out_of_window, t_sum = [], [], 0, 0.0
        for _, f0, f1, affine in pairs:
            t0 = time.perf_counter()
            a, b = extractor(pad_to_stride(f0, s)[None]), extractor(pad_to_stride(f1, s)[None])
            disp, _ = motion_from_features(a, b, radius=radius, estimator=estimator)
            t_sum += time.perf_counter() - t0
            gt, inside = true_flow(affine, tuple(disp.shape[-2:]), s, tuple(f0.shape[1:]))
            in_window = (gt.abs() <= radius * s).all(0)
            out_of_window += int((inside & ~in_window).sum())
            keep = inside & in_window
            e = (disp[0].double() * s - gt).norm(dim=0)[keep]
            errs.append(e)
            zero_errs.append(gt.norm(dim=0)[keep])
        e, z = torch.cat(errs), torch.cat(zero_errs)
        rows.append({"features": feat_name, "stride": s, "pairs": len(pairs), "cells": int(e.numel()), "epe_mean_px": float(e.mean()),
                     "epe_median_px": float(e.median()), "under_1_cell": float((e < s).double().mean()),
                     "zero_flow_epe_px": float(z.mean()), "out_of_window": out_of_window, "s_per_pair": t_sum / len(pairs)})  # fmt: skip
    return rows


def _timed(fn, x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        fn(x)  # warm-up
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def run_cost(*, arch: str, size: tuple[int, int], n_frames: int, clips: int, repeats: int, device: str) -> list[dict]:
    """The backbone's forward pass on ``clips`` clips of ``n_frames`` frames, with MotionSqueeze
    after layer2, and the MotionSqueeze module alone on the same stage output (its input, caught by
    a hook): its share of the forward pass."""
    from corrflow.models.backbone import SegmentationBackbone
    from corrflow.models.motion.motion_squeeze import MotionSqueeze

    dev = torch.device(device)
    x = torch.rand(clips * n_frames, 3, *size, device=dev)
    bb = SegmentationBackbone(arch=arch, motion=functools.partial(MotionSqueeze, n_frames=n_frames)).to(dev).eval()
    caught = {}
    hook = bb.motion.register_forward_hook(lambda m, inp, out: caught.setdefault("x", inp[0]))
    whole = _timed(bb, x, repeats)
    hook.remove()
    ms = _timed(bb.motion, caught["x"], repeats)
    c, h, w = caught["x"].shape[1:]
    return [
        {"model": "backbone + MotionSqueeze", "arch": arch, "frames": clips * n_frames, "input": f"{size[0]}x{size[1]}", "s_per_forward": whole},
        {"model": "MotionSqueeze alone", "arch": arch, "frames": clips * n_frames, "input": f"{c}x{h}x{w}", "s_per_forward": ms,
         "share": ms / whole},
    ]  # fmt: skip


def format_rows(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    cells = [[cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths, strict=True))  # noqa: E731
    return "\n".join([line(keys), *(line(c) for c in cells)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="benchmark.py flow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    e = sub.add_parser("epe", help="end-point error on real frames warped by random affine motions")
    e.add_argument("--frames", nargs="+", required=True, help="frame folders, or folders of them")
    e.add_argument("--features", nargs="+", default=["lab", "random"], help="conf/features names; random:crw for the CRW architecture")
    e.add_argument("--ckpt", default=None, help="a corrflow checkpoint, for --features checkpoint")
    e.add_argument("--every", type=int, default=10)
    e.add_argument("--limit", type=int, default=20, help="at most this many frames")
    e.add_argument("--max-side", type=int, default=432)
    e.add_argument("--radius", type=int, default=7)
    e.add_argument("--estimator", default="kernel_soft_argmax")
    e.add_argument("--rotate", type=float, default=3.0)
    e.add_argument("--scale", type=float, default=0.03)
    e.add_argument("--shear", type=float, default=2.0)
    e.add_argument("--shift", type=float, default=10.0)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", default=None)
    c = sub.add_parser("cost", help="a backbone's forward pass with and without MotionSqueeze")
    c.add_argument("--arch", default="crw")
    c.add_argument("--size", type=int, nargs=2, default=[224, 224])
    c.add_argument("--n-frames", type=int, default=8)
    c.add_argument("--clips", type=int, default=1)
    c.add_argument("--repeats", type=int, default=3)
    c.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    c.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.what == "epe":
        frames = load_frames(a.frames, every=a.every, max_side=a.max_side, limit=a.limit)
        rows = run_epe(frames=frames, features=a.features, ckpt=a.ckpt, radius=a.radius, estimator=a.estimator, seed=a.seed,
                       rotate=a.rotate, scale=a.scale, shear=a.shear, shift=a.shift)  # fmt: skip
    else:
        rows = run_cost(arch=a.arch, size=tuple(a.size), n_frames=a.n_frames, clips=a.clips, repeats=a.repeats, device=a.device)
    print(format_rows(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
