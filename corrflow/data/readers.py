"""Reading frames from a source: video files through decord (imported lazily), frame folders
through PIL. Every failure is raised as ``VideoReadError`` naming the file."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from corrflow.data.sources import VideoSource, list_frames


class VideoReadError(RuntimeError):
    """A video or frame could not be read; the message names the file."""


def _decord():
    try:
        import decord
    except ImportError as e:  # pragma: no cover - decord is a dependency, but may fail to load
        raise VideoReadError("decoding video files needs decord: pip install decord (or use folders of frames)") from e
    return decord


def num_frames(source: VideoSource) -> int:
    """How many frames the source has (opens the container or lists the folder)."""
    if source.kind == "frames":
        return len(list_frames(source.path))
    try:
        vr = _decord().VideoReader(source.path, num_threads=1)
        return len(vr)
    except VideoReadError:
        raise
    except Exception as e:  # decord raises its own DECORDError and RuntimeError
        raise VideoReadError(f"{source.path}: cannot open video ({type(e).__name__}: {e})") from e


def read_frames(source: VideoSource, indices: Sequence[int]) -> np.ndarray:
    """Frames at ``indices`` as (T, H, W, 3) uint8 RGB."""
    if source.kind == "frames":
        files = list_frames(source.path)
        out = []
        for i in indices:
            try:
                with Image.open(files[i]) as im:
                    out.append(np.asarray(im.convert("RGB")))
            except (OSError, IndexError) as e:
                name = files[i] if i < len(files) else f"{source.path}[{i}]"
                raise VideoReadError(f"{name}: cannot read frame ({e})") from e
        if len({f.shape for f in out}) > 1:
            raise VideoReadError(f"{source.path}: frames of different sizes {sorted({f.shape for f in out})}")
        return np.stack(out)
    try:
        vr = _decord().VideoReader(source.path, num_threads=1)
        return vr.get_batch(list(indices)).asnumpy()
    except VideoReadError:
        raise
    except Exception as e:
        raise VideoReadError(f"{source.path}: cannot decode frames {list(indices)} ({type(e).__name__}: {e})") from e
