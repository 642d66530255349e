"""Overlay pictures: masks and keypoints drawn over frames, strips and GIFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corrflow.utils.overlay import OverlayRecorder, blend_mask, draw_keypoints, image_strip
from corrflow.utils.palette import DAVIS_COLOURS


def test_blend_mask_colours_objects_and_leaves_background() -> None:
    frame = np.full((10, 12, 3), 100, np.uint8)
    mask = np.zeros((10, 12), np.uint8)
    mask[2:8, 3:9] = 1
    out = blend_mask(frame, mask, alpha=0.5)
    assert np.array_equal(out[0, 0], frame[0, 0])  # background untouched
    inner = np.round(0.5 * 100 + 0.5 * DAVIS_COLOURS[1].astype(float)).astype(np.uint8)
    assert np.array_equal(out[4, 5], inner)
    assert np.array_equal(out[2, 5], DAVIS_COLOURS[1])  # outline in full colour
    with pytest.raises(ValueError, match="differ in size"):
        blend_mask(frame, mask[:5])


def test_draw_keypoints_skips_nan() -> None:
    frame = np.zeros((20, 20, 3), np.uint8)
    out = draw_keypoints(frame, np.array([[5.0, 5.0], [np.nan, np.nan]]), radius=2)
    assert out[5, 5].any() and not out[15, 15].any()
    assert not frame.any()  # the input is not drawn on


def test_recorder_keeps_a_bounded_number_of_thumbnails(tmp_path: Path) -> None:
    rec = OverlayRecorder(200, strip_frames=4, gif_frames=10, max_width=16)
    kept = [t for t in range(200) if rec.wants(t)]
    assert 10 <= len(kept) <= 14 and 0 in kept and 199 in kept
    for t in range(200):
        rec.add(t, np.full((20, 40, 3), t % 256, np.uint8))
    assert len(rec._thumbs) == len(kept)
    rec.save(tmp_path / "s.png", tmp_path / "s.gif")
    with Image.open(tmp_path / "s.png") as strip:
        assert strip.size == (4 * 16 + 3 * 4, 8)
    with Image.open(tmp_path / "s.gif") as gif:
        assert gif.n_frames == 10


def test_image_strip_needs_one_height() -> None:
    with pytest.raises(ValueError, match="share a height"):
        image_strip([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])
