"""Masks the user gives on the page -> (H, W) uint8 id maps (0 background, 1..N the objects).

Two ways in: painting on the frame (the image editor's RGBA layers, one brush colour an object:
the DAVIS palette's colours 1..N, so the page, the overlays and the written PNGs agree) and palette
PNGs (DAVIS annotations; pixel value = object id).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from corrflow.data.vos.davis import VOID_ID, object_ids
from corrflow.utils.io import read_indexed_png
from corrflow.utils.palette import DAVIS_COLOURS

__all__ = ["ALPHA_THRESHOLD", "brush_colours", "frame_of", "ids_from_layers", "mask_from_png", "merge_masks"]

ALPHA_THRESHOLD = 128  # a painted pixel: at least half opaque (the brush's soft edge below it is not paint)


def brush_colours(n_objects: int) -> list[str]:
    """The brush colour of objects 1..n, as ``#rrggbb`` (the DAVIS palette's, as the written PNGs)."""
    if not 1 <= n_objects <= 254:
        raise ValueError(f"between 1 and 254 objects, got {n_objects}")
    return ["#" + "".join(f"{int(v):02x}" for v in DAVIS_COLOURS[i]) for i in range(1, n_objects + 1)]


def ids_from_layers(layers: Sequence[np.ndarray], size: tuple[int, int], *, n_objects: int) -> np.ndarray:
    """Painted layers -> an id map: each painted pixel (alpha >= :data:`ALPHA_THRESHOLD`) takes the
    object whose brush colour (:func:`brush_colours`) is nearest its RGB; later layers paint over
    earlier ones; unpainted pixels (and erased ones: transparent) are background.

    Args:
        layers: (H, W, 4) uint8 RGBA arrays (the image editor's ``layers``); (H, W, 3) counts as opaque.
        size: (H, W) of the frame painted on.
        n_objects: how many brush colours there are.

    Returns:
        (H, W) uint8 ids in 0..n_objects.

    Raises:
        ValueError: a layer of another size than the frame (naming the layer and both sizes).
    """
    palette = DAVIS_COLOURS[1 : n_objects + 1].astype(np.int32)  # (N, 3)
    ids = np.zeros(tuple(size), dtype=np.uint8)
    for i, layer in enumerate(layers):
        layer = np.asarray(layer)
        if layer.ndim != 3 or layer.shape[2] not in (3, 4):
            raise ValueError(f"painted layer {i + 1} must be (H, W, 3 or 4), got shape {layer.shape}")
        if layer.shape[:2] != tuple(size):
            raise ValueError(
                f"painted layer {i + 1} is {layer.shape[1]}x{layer.shape[0]} but the frame is {size[1]}x{size[0]}: paint on the frame shown"
            )
        painted = layer[..., 3] >= ALPHA_THRESHOLD if layer.shape[2] == 4 else np.ones(layer.shape[:2], dtype=bool)
        if not painted.any():
            continue
        rgb = layer[..., :3][painted].astype(np.int32)  # (P, 3)
        nearest = ((rgb[:, None, :] - palette[None]) ** 2).sum(-1).argmin(1)  # (P,)
        ids[painted] = (nearest + 1).astype(np.uint8)
    return ids


def frame_of(file_name: str | os.PathLike, default: int) -> int:
    """The frame a mask file is for: its name's number (``00012.png`` -> 12), else ``default``."""
    m = re.fullmatch(r"\D*?(\d+)", Path(file_name).stem)
    return int(m.group(1)) if m else int(default)


def mask_from_png(path: str | os.PathLike, size: tuple[int, int], *, original_size: tuple[int, int] | None = None) -> np.ndarray:
    """A palette (or greyscale) PNG's id map for frames of ``size`` (H, W). A mask of the video's
    ``original_size`` (before the page resized it) is resized to the frames by nearest neighbour;
    void (255) becomes background.

    Raises:
        ValueError: not a palette/greyscale PNG, a mask of another size (naming the file and both
        sizes), or no object in it. FileNotFoundError: no file.
    """
    path = Path(path)
    mask = read_indexed_png(path)
    if mask.shape != tuple(size):
        if original_size is not None and mask.shape == tuple(original_size):
            t = torch.from_numpy(mask)[None, None].float()
            mask = F.interpolate(t, size=tuple(size), mode="nearest")[0, 0].to(torch.uint8).numpy()
        else:
            also = f" (nor the video's own {original_size[1]}x{original_size[0]})" if original_size and tuple(original_size) != tuple(size) else ""
            raise ValueError(f"{path.name}: the mask is {mask.shape[1]}x{mask.shape[0]} but the frames are {size[1]}x{size[0]}{also}")
    mask = np.where(mask == VOID_ID, 0, mask).astype(np.uint8)
    if not object_ids(mask):
        raise ValueError(f"{path.name}: the mask holds no object (every pixel is background)")
    return mask


def merge_masks(*sources: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """``{frame: ids}`` from several sources, later ones replacing earlier ones frame by frame."""
    out: dict[int, np.ndarray] = {}
    for s in sources:
        out.update({int(t): m for t, m in s.items()})
    return out
