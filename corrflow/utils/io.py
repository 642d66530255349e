"""Indexed (palette) PNG reading and writing, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from corrflow.utils.palette import DAVIS_PALETTE


def read_indexed_png(path: str | os.PathLike) -> np.ndarray:
    """Read a palette PNG as its index map.

    Returns:
        (H, W) uint8 array of palette indices (object ids; 255 = void in DAVIS).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not an image, or not a palette ('P') or greyscale ('L') image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(
                    f"{path}: expected a palette (indexed) PNG whose pixel values are object ids, "
                    f"got image mode {im.mode!r}"
                )
            return np.array(im, dtype=np.uint8)
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from e


def write_indexed_png(path: str | os.PathLike, mask: np.ndarray, palette: bytes = DAVIS_PALETTE) -> None:
    """Write an (H, W) integer id map as a palette PNG (atomically: temp file, then rename)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{path}: mask must be (H, W), got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"{path}: mask ids must lie in [0, 255], got [{mask.min()}, {mask.max()}]")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(mask.astype(np.uint8))  # 'L'; putpalette makes it 'P' with the same indices
    im.putpalette(palette)
    tmp = path.with_name(f".{path.name}.tmp")
    im.save(tmp, format="PNG")
    os.replace(tmp, path)
