"""Generated videos where motion is the only cue: each video is a fresh random texture moving
``step`` pixels a frame in one of four directions (its class: right, left, down, up), so a
frame's appearance says nothing about the class. Written as class-per-folder frame folders for
:class:`~corrflow.data.action.videos.ActionVideoDataset`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DIRECTIONS", "write_moving_texture_videos"]

DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}  # (dx, dy) of the content


def _texture(rng: np.random.Generator, h: int, w: int, grain: int) -> np.ndarray:
    small = rng.integers(0, 256, (max(h // grain, 2), max(w // grain, 2), 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def write_moving_texture_videos(
    root: str | os.PathLike, *, videos_per_class: int = 20, n_frames: int = 8, size: tuple[int, int] = (64, 64),
    step: int = 4, grain: int = 4, seed: int = 0,
) -> Path:  # fmt: skip
    """Write ``<root>/<direction>/<video>/%05d.png``; returns ``root``.

    Each frame is the (h, w) window of a larger texture, moved by ``step`` pixels a frame (content
    moving right means the window moves left over the texture).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    span = step * (n_frames - 1)
    for name, (dx, dy) in DIRECTIONS.items():
        for v in range(videos_per_class):
            big = _texture(rng, h + span, w + span, grain)
            folder = root / name / f"{name}_{v:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            x0 = span if dx > 0 else 0
            y0 = span if dy > 0 else 0
            for t in range(n_frames):
                x, y = x0 - dx * step * t, y0 - dy * step * t
                Image.fromarray(big[y : y + h, x : x + w]).save(folder / f"{t:05d}.png")
    return root


def main(argv: list[str] | None = None) -> None:
    """``python -m corrflow.data.action.synthetic_motion <root> [--videos-per-class 40] ...``"""
    import argparse

    p = argparse.ArgumentParser(prog="python -m corrflow.data.action.synthetic_motion", description=__doc__)
    p.add_argument("root")
    p.add_argument("--videos-per-class", type=int, default=40)
    p.add_argument("--n-frames", type=int, default=8)
    p.add_argument("--size", type=int, nargs=2, default=[64, 64])
    p.add_argument("--step", type=int, default=8)
    p.add_argument("--grain", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    root = write_moving_texture_videos(a.root, videos_per_class=a.videos_per_class, n_frames=a.n_frames, size=tuple(a.size),
                                       step=a.step, grain=a.grain, seed=a.seed)  # fmt: skip
    print(f"{4 * a.videos_per_class} videos under {root}")


if __name__ == "__main__":
    main()
