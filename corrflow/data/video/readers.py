"""Reading frames from a source: frame folders through PIL, video files through decord or PyAV.

Both video back-ends are optional and imported lazily. ``VideoSource.decoder`` picks one:
'auto' (decord if it imports, else PyAV), 'decord' or 'pyav'. Both return frame ``i`` as the
i-th frame in presentation order, (T, H, W, 3) uint8 RGB. Every failure to read a file is raised
as ``VideoReadError`` naming the file; a missing decoder is ``DecoderNotFoundError`` (an
``ImportError``, so a run stops at once instead of skipping every video).
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from corrflow.data.video.sources import DECODERS, VideoSource, list_frames
from corrflow.utils.cli import register_user_error

log = logging.getLogger(__name__)


@register_user_error
class VideoReadError(RuntimeError):
    """A video or frame could not be read; the message names the file."""


class DecoderNotFoundError(ImportError):
    """No installed video decoder for the decoder asked for; the message says what to install."""


NO_DECODER_MESSAGE = (
    "decoding video files needs decord or PyAV, and neither is installed: `pip install decord` "
    "(x86-64 Linux and Windows wheels only) or `pip install av` (any platform). "
    "Folders of frames need neither."
)


def _import_decord():
    try:
        import decord
    except (ImportError, OSError):
        return None
    return decord


def _import_av():
    try:
        import av
    except (ImportError, OSError):
        return None
    return av


def resolve_decoder(decoder: str = "auto") -> str:
    """The back-end that ``decoder`` ('auto', 'decord' or 'pyav') means here: 'decord' or 'pyav'.

    Raises:
        ValueError: an unknown decoder name.
        DecoderNotFoundError: the decoder asked for (or, with 'auto', any decoder) is not installed.
    """
    if decoder == "decord":
        if _import_decord() is None:
            raise DecoderNotFoundError(
                "decoder='decord' but decord is not installed: `pip install decord` (x86-64 Linux and "
                "Windows only), or data.decoder=pyav with `pip install av`"
            )
        return "decord"
    if decoder == "pyav":
        if _import_av() is None:
            raise DecoderNotFoundError("decoder='pyav' but PyAV is not installed: `pip install av`")
        return "pyav"
    if decoder != "auto":
        raise ValueError(f"decoder must be one of {', '.join(map(repr, DECODERS))}, got {decoder!r}")
    backend = "decord" if _import_decord() is not None else "pyav" if _import_av() is not None else None
    if backend is None:
        raise DecoderNotFoundError(NO_DECODER_MESSAGE)
    if backend not in _announced:
        _announced.add(backend)
        log.info("video files: decoding with %s (data.decoder=auto)", "decord" if backend == "decord" else "PyAV")
    return backend


_announced: set[str] = set()  # the back-ends 'auto' has logged its choice of, once per process


# ----------------------------------------------------------------------------------------- PyAV


class _SeekUnreliable(Exception):
    """Seeking cannot be trusted for this file: decode from the start instead."""


@functools.lru_cache(maxsize=1024)
def _pyav_index(path: str, size: int, mtime_ns: int) -> tuple[tuple[int | None, ...], tuple[int, ...], bool]:
    """Demux (no decoding) a file's first video stream: the packets' pts in presentation order,
    the sorted key-frame pts, and whether pts-based seeking can be trusted (every packet timed,
    no repeats, a key frame first). Cached per process, keyed by the file's size and mtime, so
    a long video is not re-read for every clip."""
    av = _import_av()
    with av.open(path) as container:
        if not container.streams.video:
            raise VideoReadError(f"{path}: no video stream")
        pts: list[int | None] = []
        keys: list[int] = []
        for packet in container.demux(container.streams.video[0]):
            if packet.size == 0:  # the flush packet at the end of the stream
                continue
            pts.append(packet.pts)
            if packet.is_keyframe and packet.pts is not None:
                keys.append(packet.pts)
    timed = all(p is not None for p in pts)
    if timed:
        pts.sort()
        keys.sort()
    reliable = timed and bool(pts) and bool(keys) and len(set(pts)) == len(pts) and keys[0] <= pts[0]
    return tuple(pts), tuple(keys), reliable


def _index_of(path: str) -> tuple[tuple[int | None, ...], tuple[int, ...], bool]:
    st = os.stat(path)
    return _pyav_index(path, st.st_size, st.st_mtime_ns)


def _rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def _pyav_seek_read(container, stream, pts: Sequence[int], keys: Sequence[int], wanted: list[int]) -> dict[int, np.ndarray]:
    """Frames ``wanted`` (sorted, distinct) by seeking to the key frame at or before each and
    decoding forward to the exact pts; one decoding run serves every target in its GOP.

    Raises ``_SeekUnreliable`` when a seek does not land on a key frame at or before the one asked
    for (MPEG-PS / TS seek by bytes and can land mid-GOP, where frames decode wrong), or when the
    target never comes out of the decoder."""
    key_set = set(keys)
    by_pts = {pts[i]: i for i in wanted}
    out: dict[int, np.ndarray] = {}
    frames = None  # the running decoder
    last = None  # pts of the last frame it gave
    for i in wanted:
        if i in out:
            continue
        target = pts[i]
        key = keys[bisect.bisect_right(keys, target) - 1]
        seeked = frames is None or last is None or key > last
        if seeked:
            container.seek(key, stream=stream, backward=True, any_frame=False)
            frames, last = container.decode(stream), None
        for frame in frames:
            if frame.pts is None:
                raise _SeekUnreliable
            if seeked and last is None and (frame.pts not in key_set or frame.pts > key):
                raise _SeekUnreliable
            last = frame.pts
            j = by_pts.get(frame.pts)
            if j is not None and j not in out:
                out[j] = _rgb(frame)
            if frame.pts >= target:
                break
        if i not in out:
            raise _SeekUnreliable
    return out


def _pyav_sequential_read(container, stream, wanted: list[int]) -> dict[int, np.ndarray]:
    """Frames ``wanted`` (sorted) by decoding from the start and counting frames."""
    container.seek(0, stream=stream, backward=True, any_frame=False)
    todo = set(wanted)
    out: dict[int, np.ndarray] = {}
    for n, frame in enumerate(container.decode(stream)):
        if n in todo:
            out[n] = _rgb(frame)
            if len(out) == len(todo):
                break
    return out


def _pyav_num_frames(path: str) -> int:
    return len(_index_of(path)[0])


def _pyav_read(path: str, indices: Sequence[int]) -> np.ndarray:
    pts, keys, reliable = _index_of(path)
    bad = [i for i in indices if not 0 <= i < len(pts)]
    if bad:
        raise VideoReadError(f"{path}: frame indices {bad} out of range (the video has {len(pts)} frames)")
    wanted = sorted(set(indices))
    with _import_av().open(path) as container:
        stream = container.streams.video[0]
        out = None
        if reliable:
            try:
                out = _pyav_seek_read(container, stream, pts, keys, wanted)
            except _SeekUnreliable:
                out = None
        if out is None:
            out = _pyav_sequential_read(container, stream, wanted)
    missing = [i for i in wanted if i not in out]
    if missing:
        raise VideoReadError(f"{path}: frames {missing} could not be decoded")
    return np.stack([out[i] for i in indices])


# --------------------------------------------------------------------------------------- decord


def _decord_num_frames(path: str) -> int:
    return len(_import_decord().VideoReader(path, num_threads=1))


def _decord_read(path: str, indices: Sequence[int]) -> np.ndarray:
    return _import_decord().VideoReader(path, num_threads=1).get_batch(list(indices)).asnumpy()


# ------------------------------------------------------------------------------------------ API


def num_frames(source: VideoSource) -> int:
    """How many frames the source has (opens the container or lists the folder)."""
    if source.kind == "frames":
        return len(list_frames(source.path))
    backend = resolve_decoder(source.decoder)
    try:
        return _decord_num_frames(source.path) if backend == "decord" else _pyav_num_frames(source.path)
    except VideoReadError:
        raise
    except Exception as e:  # decord's DECORDError / RuntimeError, PyAV's FFmpegError family
        raise VideoReadError(f"{source.path}: cannot open video ({type(e).__name__}: {e})") from e


def read_frames(source: VideoSource, indices: Sequence[int]) -> np.ndarray:
    """Frames at ``indices`` (any order, repeats allowed) as (T, H, W, 3) uint8 RGB."""
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
    backend = resolve_decoder(source.decoder)
    indices = [int(i) for i in indices]
    try:
        return _decord_read(source.path, indices) if backend == "decord" else _pyav_read(source.path, indices)
    except VideoReadError:
        raise
    except Exception as e:
        raise VideoReadError(f"{source.path}: cannot decode frames {indices} ({type(e).__name__}: {e})") from e
