"""Annotated frames for training segmenters: where they are, and reading one with its mask.

Layouts (``layout=``, always stated, never guessed from the files):

- ``davis``: ``<root>/JPEGImages/<resolution>/<seq>/*.jpg`` + ``<root>/Annotations/<resolution>/<seq>/*.png``
  with a split file (read by :class:`corrflow.data.vos.davis.DAVISDataset`) or explicit ``sequences``.
- ``youtube``: YouTube-VOS (``<root>`` is e.g. ``.../train``): ``<root>/JPEGImages/<video>/*.jpg`` +
  ``<root>/Annotations/<video>/*.png``; every video under ``JPEGImages`` unless ``sequences`` names them.
- ``salient``: a salient-object data set as ECSSD, MSRA10K and DUTS ship: ``<root>/images/*.jpg`` +
  ``<root>/masks/<same stem>.png``, 8-bit masks (0 background, 255 object; values from 128 up
  count as the object). Single images, so only for static-image pretraining.

Masks of the video layouts are id maps: 0 background, 1..N objects, 255 void (ignored by the loss).
Only frames that have an annotation PNG are used (YouTube-VOS annotates every 5th).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from corrflow.data.video.frame_files import FRAME_EXTENSIONS, frame_size, read_frame
from corrflow.data.vos.davis import DAVISDataset
from corrflow.utils.io import read_indexed_png

log = logging.getLogger(__name__)

__all__ = ["LAYOUTS", "AnnotatedFrame", "AnnotatedVideo", "annotated_videos", "read_annotated", "salient_frames"]

LAYOUTS = ("davis", "youtube", "salient")
VOID_ID = 255


@dataclass(frozen=True)
class AnnotatedFrame:
    """An image and its mask; ``binary``: the mask is a 0/255 salient-object mask."""

    image: Path
    mask: Path
    binary: bool = False


@dataclass(frozen=True)
class AnnotatedVideo:
    """A video's annotated frames, in order."""

    name: str
    frames: tuple[AnnotatedFrame, ...]

    def __len__(self) -> int:
        return len(self.frames)


def read_annotated(frame: AnnotatedFrame) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB and its (H, W) uint8 id map (0/1 for a binary mask).

    Raises:
        FileNotFoundError / ValueError naming the file: unreadable image or mask, or sizes that differ.
    """
    image = read_frame(frame.image)
    if frame.binary:
        if not frame.mask.is_file():
            raise FileNotFoundError(f"mask file not found: {frame.mask}")
        try:
            with Image.open(frame.mask) as im:
                mask = (np.asarray(im.convert("L")) >= 128).astype(np.uint8)
        except (OSError, SyntaxError) as e:
            raise ValueError(f"{frame.mask}: cannot read mask ({e})") from e
    else:
        mask = read_indexed_png(frame.mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(
            f"{frame.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {frame.image} is {image.shape[1]}x{image.shape[0]}"
        )
    return image, mask


def annotated_videos(
    roots: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    layout: str = "davis",
    year: str = "2017",
    split: str = "train",
    resolution: str = "480p",
    sequences: Sequence[str] | None = None,
    min_frames: int = 1,
    validate: bool = False,
) -> list[AnnotatedVideo]:
    """The videos of one or more ``davis`` / ``youtube`` roots, each with its annotated frames.

    Args:
        roots: one root or a list of roots of the same layout.
        year, split, resolution: the DAVIS split file and resolution folder (``davis`` only).
        sequences: explicit video names (instead of the split file / every folder).
        min_frames: videos with fewer annotated frames are skipped with a warning.
        validate: check every annotation before training (``davis``): sizes, and ids the first
            frame lacks (an error naming the file). Reads every mask once.

    Raises:
        ValueError: an unknown layout, or no usable video (naming the roots).
        FileNotFoundError: a missing root, split file or folder (from the DAVIS reader).
    """
    if layout not in ("davis", "youtube"):
        raise ValueError(f"layout must be 'davis' or 'youtube' for videos (salient holds single images), got {layout!r}")
    videos: list[AnnotatedVideo] = []
    root_list = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    if not root_list:
        raise ValueError("no data root given (data.root=...)")
    for root in root_list:
        root = Path(root)
        if layout == "youtube":
            folder = root / "JPEGImages"
            if not folder.is_dir():
                raise FileNotFoundError(f"YouTube-VOS frames folder not found: {folder} (layout=youtube expects <root>/JPEGImages/<video>/)")
            names = list(sequences) if sequences is not None else sorted(p.name for p in folder.iterdir() if p.is_dir())
            if not names:
                raise ValueError(f"{folder}: no video folders")
            dataset = DAVISDataset(root, resolution="", sequences=names)
        else:
            dataset = DAVISDataset(root, year=year, split=split, resolution=resolution, sequences=sequences)
        for video in dataset:
            if validate and layout == "davis":
                video.validate_annotations()
            frames = tuple(
                AnnotatedFrame(image=p, mask=video.annotation_dir / f"{p.stem}.png")
                for p in video.frame_paths
                if (video.annotation_dir / f"{p.stem}.png").is_file()
            )
            if len(frames) < min_frames:
                log.warning("skipping video %s: %d annotated frames in %s, fewer than %d", video.name, len(frames), video.annotation_dir, min_frames)
                continue
            videos.append(AnnotatedVideo(name=video.name, frames=frames))
    if not videos:
        raise ValueError(f"no video with at least {min_frames} annotated frames under {', '.join(map(str, root_list))} (layout={layout})")
    return videos


def salient_frames(roots: str | os.PathLike | Sequence[str | os.PathLike], *, check_sizes: bool = True) -> list[AnnotatedFrame]:
    """The image / mask pairs of salient-object roots (``images/*.jpg`` + ``masks/<stem>.png``).

    Images without a mask are skipped with one warning (counted). Sizes are checked from the
    files' headers when ``check_sizes``.

    Raises:
        FileNotFoundError: a missing ``images`` or ``masks`` folder. ValueError: no pair at all,
        or an image and its mask of different sizes (naming both).
    """
    root_list = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    pairs: list[AnnotatedFrame] = []
    for root in map(Path, root_list):
        images, masks = root / "images", root / "masks"
        for folder in (images, masks):
            if not folder.is_dir():
                raise FileNotFoundError(f"salient-object folder not found: {folder} (layout=salient expects <root>/images and <root>/masks)")
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
        unpaired = [p for p in files if not (masks / f"{p.stem}.png").is_file()]
        if unpaired:
            log.warning("%s: %d of %d images have no mask in %s (e.g. %s); skipped", images, len(unpaired), len(files), masks, unpaired[0].name)
        for p in files:
            m = masks / f"{p.stem}.png"
            if not m.is_file():
                continue
            if check_sizes and frame_size(p) != frame_size(m):
                (ih, iw), (mh, mw) = frame_size(p), frame_size(m)
                raise ValueError(f"{m}: mask is {mw}x{mh} but its image {p} is {iw}x{ih}")
            pairs.append(AnnotatedFrame(image=p, mask=m, binary=True))
    if not pairs:
        raise ValueError(f"no image with a mask under {', '.join(map(str, root_list))} (layout=salient: images/*.jpg + masks/<stem>.png)")
    return pairs
