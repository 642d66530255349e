"""Tiny annotated video-object-segmentation data made on the fly: DAVIS / YouTube-VOS trees and a
salient-object folder, with objects (coloured rectangles) moving over a textured background and
masks that match them exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from corrflow.utils.io import write_indexed_png


def moving_objects(n_frames: int, size: tuple[int, int] = (32, 48), *, n_objects: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) uint8 frames and (T, H, W) uint8 id masks (0 background, 1..n objects)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    background = (np.stack([xx * 3 % 64, yy * 5 % 64, (xx + yy) % 32], -1) + rng.integers(0, 40, 3)).astype(np.uint8)
    frames = np.repeat(background[None], n_frames, axis=0)
    masks = np.zeros((n_frames, h, w), np.uint8)
    for k in range(1, n_objects + 1):
        colour = rng.integers(120, 256, 3)
        oh, ow = max(h // 4, 2), max(w // 5, 2)
        y0, x0 = int(rng.integers(0, h - oh)), int(rng.integers(0, w - ow))
        vy, vx = rng.choice([-1, 1]), rng.choice([-1, 1])
        for t in range(n_frames):
            y = int(np.clip(y0 + vy * t, 0, h - oh))
            x = int(np.clip(x0 + 2 * vx * t, 0, w - ow))
            frames[t, y : y + oh, x : x + ow] = colour
            masks[t, y : y + oh, x : x + ow] = k
    return frames, masks


def write_davis_tree(
    root: Path,
    videos: dict[str, int],
    *,
    size: tuple[int, int] = (32, 48),
    n_objects: int = 2,
    year: str = "2017",
    split: str = "train",
    resolution: str = "480p",
    ext: str = "png",
    annotate_every: int = 1,
) -> Path:
    """A DAVIS tree (``resolution=''`` and no split file: a YouTube-VOS one) of ``{name: n_frames}``."""
    for i, (name, n) in enumerate(videos.items()):
        frames, masks = moving_objects(n, size, n_objects=n_objects, seed=i)
        fdir, adir = root / "JPEGImages" / resolution / name, root / "Annotations" / resolution / name
        fdir.mkdir(parents=True, exist_ok=True)
        adir.mkdir(parents=True, exist_ok=True)
        for t in range(n):
            Image.fromarray(frames[t]).save(fdir / f"{t:05d}.{ext}")
            if t % annotate_every == 0:
                write_indexed_png(adir / f"{t:05d}.png", masks[t])
    if resolution:
        split_file = root / "ImageSets" / year / f"{split}.txt"
        split_file.parent.mkdir(parents=True, exist_ok=True)
        split_file.write_text("\n".join(videos) + "\n")
    return root


def write_salient_tree(root: Path, n_images: int = 3, *, size: tuple[int, int] = (40, 40)) -> Path:
    """``images/*.jpg`` + ``masks/*.png`` (8-bit, 0 / 255), as ECSSD or DUTS ship them."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        frames, masks = moving_objects(1, size, n_objects=1, seed=10 + i)
        Image.fromarray(frames[0]).save(root / "images" / f"img{i}.jpg", quality=95)
        Image.fromarray((masks[0] > 0).astype(np.uint8) * 255).save(root / "masks" / f"img{i}.png")
    return root
