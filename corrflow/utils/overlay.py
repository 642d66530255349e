"""Pictures of propagated labels: masks and keypoints drawn over frames, a strip of a few frames
(PNG) and an animated GIF per sequence.

:class:`OverlayRecorder` keeps only small thumbnails of the frames it will show (a fixed number),
so its memory does not grow with the video.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from corrflow.utils.palette import DAVIS_COLOURS

__all__ = ["OverlayRecorder", "blend_mask", "draw_keypoints", "image_strip", "keypoint_colours"]


def blend_mask(frame: np.ndarray, mask: np.ndarray, *, alpha: float = 0.5, colours: np.ndarray = DAVIS_COLOURS) -> np.ndarray:
    """Colour each object over the frame, with its outline in full colour.

    Args:
        frame: (H, W, 3) uint8 RGB.
        mask: (H, W) integer ids (0 = background, left as is; 255 = void, left as is).

    Returns:
        (H, W, 3) uint8.
    """
    if frame.shape[:2] != mask.shape:
        raise ValueError(f"frame {frame.shape[:2]} and mask {mask.shape} differ in size")
    mask = mask.astype(np.int64)
    out = frame.astype(np.float32)
    obj = (mask > 0) & (mask != 255)
    col = colours[mask % len(colours)].astype(np.float32)
    out[obj] = (1 - alpha) * out[obj] + alpha * col[obj]
    edge = np.zeros_like(obj)
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[1:] |= mask[:-1] != mask[1:]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:, 1:] |= mask[:, :-1] != mask[:, 1:]
    edge &= obj
    out[edge] = col[edge]
    return out.round().clip(0, 255).astype(np.uint8)


def keypoint_colours(k: int) -> np.ndarray:
    """(K, 3) uint8: K well-separated hues."""
    import colorsys

    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(i / max(k, 1), 0.9, 1.0)] for i in range(k)], dtype=np.uint8)


def draw_keypoints(frame: np.ndarray, coords: np.ndarray, *, radius: int | None = None) -> np.ndarray:
    """Dots at keypoints (x, y pixels; NaN ones skipped), one colour per keypoint.

    Args:
        frame: (H, W, 3) uint8. coords: (K, 2).
    """
    im = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(im)
    r = radius if radius is not None else max(2, round(min(frame.shape[:2]) / 80))
    for (x, y), c in zip(np.asarray(coords, dtype=np.float64), keypoint_colours(len(coords))):
        if np.isfinite(x) and np.isfinite(y):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in c), outline=(0, 0, 0))
    return np.asarray(im)


def image_strip(images: Sequence[np.ndarray], *, gap: int = 4) -> np.ndarray:
    """Images of one height side by side, on white, ``gap`` pixels apart: (H, sum W + gaps, 3) uint8."""
    if not images:
        raise ValueError("no image to put in a strip")
    h = images[0].shape[0]
    if any(im.shape[0] != h for im in images):
        raise ValueError(f"strip images must share a height, got {[im.shape[0] for im in images]}")
    width = sum(im.shape[1] for im in images) + gap * (len(images) - 1)
    out = np.full((h, width, 3), 255, dtype=np.uint8)
    x = 0
    for im in images:
        out[:, x : x + im.shape[1]] = im
        x += im.shape[1] + gap
    return out


def _thumbnail(image: np.ndarray, max_width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w <= max_width:
        return image
    size = (max_width, max(1, round(h * max_width / w)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


class OverlayRecorder:
    """Collects thumbnails of drawn frames for one video; writes a PNG strip and a GIF.

    Args:
        n_frames: frames in the video (to choose which to keep up front).
        strip_frames: evenly spaced frames in the strip (first and last included).
        gif_frames: at most this many frames in the GIF (evenly spaced).
        max_width: thumbnail width in pixels.
        fps: GIF frame rate.
    """

    def __init__(self, n_frames: int, *, strip_frames: int = 6, gif_frames: int = 60, max_width: int = 320, fps: float = 8.0) -> None:
        self.max_width, self.fps = max_width, fps
        self.strip_ids = set(np.linspace(0, n_frames - 1, min(strip_frames, n_frames)).round().astype(int).tolist())
        self.gif_ids = set(np.linspace(0, n_frames - 1, min(gif_frames, n_frames)).round().astype(int).tolist())
        self._thumbs: dict[int, np.ndarray] = {}

    def wants(self, t: int) -> bool:
        """Whether frame t will be shown (draw it only then)."""
        return t in self.strip_ids or t in self.gif_ids

    def add(self, t: int, image: np.ndarray) -> None:
        """Keep a thumbnail of the drawn frame t ((H, W, 3) uint8), if it is shown."""
        if self.wants(t):
            self._thumbs[t] = _thumbnail(image, self.max_width)

    def save(self, strip_path: str | os.PathLike | None, gif_path: str | os.PathLike | None) -> None:
        """Write the strip (PNG) and the animation (GIF), each atomically; None skips one."""
        if not self._thumbs:
            return
        if strip_path is not None:
            frames = [self._thumbs[t] for t in sorted(self.strip_ids) if t in self._thumbs]
            _save_atomic(Path(strip_path), [Image.fromarray(image_strip(frames))])
        if gif_path is not None:
            frames = [Image.fromarray(self._thumbs[t]) for t in sorted(self.gif_ids) if t in self._thumbs]
            _save_atomic(Path(gif_path), frames, duration=round(1000 / self.fps))


def _save_atomic(path: Path, images: list[Image.Image], **gif) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    if len(images) > 1 or path.suffix.lower() == ".gif":
        images[0].save(tmp, save_all=True, append_images=images[1:], loop=0, **gif)
    else:
        images[0].save(tmp)
    os.replace(tmp, path)
