"""Finding training videos: video files (decoded with decord or PyAV) and folders of frames.

A *source* is one video: a file with a video extension, or a folder holding image frames
(DAVIS / YouTube-VOS ``JPEGImages/<video>/*.jpg``, Kinetics frames extracted to folders).
``discover_sources`` accepts a folder (searched recursively), a list file (one path a line,
relative to the list's folder or absolute), or a single video.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DECODERS = ("auto", "decord", "pyav")


@dataclass(frozen=True)
class VideoSource:
    """One video: ``kind`` is 'video' (a file) or 'frames' (a folder of images). ``decoder``
    says how a video file is decoded: 'auto' (decord if installed, else PyAV), 'decord', 'pyav'."""

    path: str
    kind: str
    decoder: str = "auto"

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(map(repr, DECODERS))}, got {self.decoder!r}")


def _is_video(p: Path) -> bool:
    return p.suffix.lower() in VIDEO_EXTENSIONS


def _frame_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    except OSError:
        return []


def list_frames(folder: str | os.PathLike) -> list[Path]:
    """The image files of a frame folder, in name order."""
    return _frame_files(Path(folder))


def _scan(root: Path) -> list[VideoSource]:
    found: list[VideoSource] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        here = Path(dirpath)
        if any(f.lower().endswith(IMAGE_EXTENSIONS) for f in filenames):
            found.append(VideoSource(str(here), "frames"))
        found.extend(VideoSource(str(here / f), "video") for f in sorted(filenames) if f.lower().endswith(VIDEO_EXTENSIONS))
    return found


def _from_entry(p: Path) -> list[VideoSource]:
    if p.is_dir():
        return _scan(p)
    if p.is_file() and _is_video(p):
        return [VideoSource(str(p), "video")]
    if p.is_file():
        raise ValueError(f"{p}: not a video file (expected one of {', '.join(VIDEO_EXTENSIONS)})")
    raise FileNotFoundError(f"video path not found: {p}")


def discover_sources(root: str | os.PathLike, *, decoder: str = "auto") -> list[VideoSource]:
    """All videos under ``root`` (folder, list file, or single video), in a stable order; video
    files are to be decoded with ``decoder`` ('auto', 'decord' or 'pyav').

    Raises:
        FileNotFoundError: ``root`` (or an entry of a list file) does not exist.
        ValueError: nothing usable was found, or an unknown decoder.
    """
    if decoder not in DECODERS:
        raise ValueError(f"data.decoder must be one of {', '.join(map(repr, DECODERS))}, got {decoder!r}")
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data path not found: {root}")
    if root.is_file() and root.suffix.lower() in (".txt", ".lst", ".csv"):
        sources: list[VideoSource] = []
        lines = [ln.strip() for ln in root.read_text().splitlines()]
        for ln in lines:
            if not ln or ln.startswith("#"):
                continue
            entry = Path(ln.split(",")[0].strip())
            sources.extend(_from_entry(entry if entry.is_absolute() else root.parent / entry))
    else:
        sources = _from_entry(root)
    if not sources:
        raise ValueError(
            f"no videos found under {root}: expected video files ({', '.join(VIDEO_EXTENSIONS)}) "
            f"or folders of frames ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return [replace(s, decoder=decoder) if s.kind == "video" else s for s in sources]
