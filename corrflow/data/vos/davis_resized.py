"""A DAVIS split resized to a working short side, written once as a DAVIS folder of its own.

The held-out monitor of pretraining (:class:`corrflow.lit.heldout_monitor.HeldOutMonitor`)
propagates first-frame masks through a few DAVIS sequences many times a run. At 480p the CRW
protocol costs seconds a frame on a CPU; at a short side of 240 a quarter of the cells and a
sixteenth of the first frame's affinities. The copy is made once (frames resized bilinearly with
anti-aliasing, masks by nearest neighbour, so ids stay ids), in the DAVIS layout, so that the very
same reading, propagation, writing and scoring code serves it: its scores are "J&F at short side
S", taken against the resized masks.

Layout written under ``dst``::

    JPEGImages/480p/<seq>/%05d.png      lossless (no second JPEG loss)
    Annotations/480p/<seq>/%05d.png     palette PNGs, ids as the source's (0/1 with single_object)
    ImageSets/<year>/<split>.txt        the sequences
    SOURCE.json                         where it came from and how (a copy made otherwise is remade)

The resolution folder keeps the name ``480p`` so that the DAVIS readers need no option.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from corrflow.data.vos.davis import DAVISDataset
from corrflow.utils.io import write_indexed_png

__all__ = ["resized_davis", "short_side_size"]

FORMAT = 1


def short_side_size(hw: Sequence[int], short_side: int | None) -> tuple[int, int]:
    """(h, w) of a frame of size ``hw`` resized so that its shorter side is ``short_side``
    (aspect kept, rounded); ``None``: the size itself."""
    if short_side is None:
        return int(hw[0]), int(hw[1])
    s = int(short_side) / min(hw)
    return max(1, round(hw[0] * s)), max(1, round(hw[1] * s))


def resized_davis(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    short_side: int | None,
    sequences: Sequence[str] | None = None,
    split: str = "val",
    year: str = "2016",
    resolution: str = "480p",
    single_object: bool = True,
) -> DAVISDataset:
    """The DAVIS sequences of ``src`` (``sequences``, else the ``split``), resized to ``short_side``
    and written under ``dst`` (once: a copy whose ``SOURCE.json`` matches is reused); returns the
    :class:`DAVISDataset` of the copy (``year``, split ``split``, the same ``single_object``).

    Raises:
        FileNotFoundError / ValueError from :class:`DAVISDataset` (missing root, split, frames or
        annotations, naming them); ValueError: a ``short_side`` under 16 pixels.
    """
    if short_side is not None and int(short_side) < 16:
        raise ValueError(f"short_side must be at least 16 pixels (or null for the frames' own size), got {short_side}")
    source = DAVISDataset(src, year=year, split=split, resolution=resolution, sequences=sequences, single_object=single_object)
    dst = Path(dst)
    record = {
        "format": FORMAT,
        "source": str(Path(src).resolve()),
        "resolution": resolution,
        "sequences": source.names,
        "frames": [len(v) for v in source.videos],
        "short_side": None if short_side is None else int(short_side),
        "single_object": bool(single_object),
    }
    stamp = dst / "SOURCE.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == record):
        if dst.exists():
            shutil.rmtree(dst)
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        for video in source.videos:
            frames_dir = tmp / "JPEGImages" / "480p" / video.name
            masks_dir = tmp / "Annotations" / "480p" / video.name
            frames_dir.mkdir(parents=True)
            size = short_side_size(video.size, short_side)
            for t, frame in enumerate(video.frames()):
                image = Image.fromarray(frame)
                if image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.BILINEAR, reducing_gap=None)
                image.save(frames_dir / f"{t:05d}.png")
            for t in video.given_frames:
                mask = video.mask(t)
                if mask.shape != size:
                    mask = np.array(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))
                write_indexed_png(masks_dir / f"{t:05d}.png", mask)
        (tmp / "ImageSets" / str(year)).mkdir(parents=True)
        (tmp / "ImageSets" / str(year) / f"{split}.txt").write_text("".join(f"{n}\n" for n in source.names))
        (tmp / "SOURCE.json").write_text(json.dumps(record, indent=1))
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, dst)
        except OSError:  # another process made it meanwhile (DDP ranks): keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    return DAVISDataset(dst, year=year, split=split, resolution="480p", single_object=single_object)
