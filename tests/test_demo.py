"""The demo page's logic (no browser, no Gradio): clips, masks from painted layers and palette
PNGs, and the propagation run, checked against ``tools/propagate.py``'s own run on the same data."""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from corrflow.data.video.readers import VideoReadError
from corrflow.data.vos.clip import ClipVideo, load_clip, resized_size, sample_clips
from corrflow.demo.masks import (
    ALPHA_THRESHOLD,
    brush_colours,
    frame_of,
    ids_from_layers,
    mask_from_png,
)
from corrflow.demo.session import Cancelled, Segmenters, propagate_clip
from corrflow.propagation.run import propagate
from corrflow.utils.cli import find_user_error
from corrflow.utils.io import read_indexed_png, write_indexed_png
from corrflow.utils.palette import DAVIS_COLOURS
from tests.helpers.vos_synthetic import moving_objects, write_davis_tree
from tests.test_tools_propagate import compose_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


# -- masks -------------------------------------------------------------------------------------


def test_brush_colours_are_the_davis_palette() -> None:
    assert brush_colours(3) == ["#800000", "#008000", "#808000"]  # VOC colours 1, 2, 3
    with pytest.raises(ValueError):
        brush_colours(0)


def _rgba(size, paint: list[tuple[tuple[slice, slice], tuple[int, int, int, int]]]) -> np.ndarray:
    layer = np.zeros((*size, 4), np.uint8)
    for where, rgba in paint:
        layer[where] = rgba
    return layer


def test_ids_from_layers_nearest_brush_colour_alpha_and_layer_order() -> None:
    c1, c2 = tuple(int(v) for v in DAVIS_COLOURS[1]), tuple(int(v) for v in DAVIS_COLOURS[2])
    first = _rgba((6, 8), [
        ((slice(0, 2), slice(0, 3)), (*c1, 255)),
        ((slice(4, 6), slice(0, 3)), (120, 10, 10, 200)),           # an anti-aliased red: object 1
        ((slice(2, 3), slice(0, 8)), (*c2, ALPHA_THRESHOLD - 1)),   # the brush's faint edge: not paint
    ])  # fmt: skip
    second = _rgba((6, 8), [((slice(0, 6), slice(2, 3)), (*c2, 255))])  # paints over column 2
    ids = ids_from_layers([first, second], (6, 8), n_objects=2)
    expected = np.zeros((6, 8), np.uint8)
    expected[0:2, 0:3] = 1
    expected[4:6, 0:3] = 1
    expected[:, 2] = 2
    np.testing.assert_array_equal(ids, expected)
    assert ids_from_layers([], (6, 8), n_objects=2).sum() == 0


def test_ids_from_layers_refuses_a_layer_of_another_size() -> None:
    with pytest.raises(ValueError, match=r"painted layer 1 is 8x5 but the frame is 8x6"):
        ids_from_layers([np.zeros((5, 8, 4), np.uint8)], (6, 8), n_objects=2)


def test_frame_of() -> None:
    assert frame_of("/x/00012.png", 3) == 12
    assert frame_of("frame_7.png", 3) == 7
    assert frame_of("mask.png", 3) == 3


def test_mask_from_png_sizes_void_and_errors(tmp_path: Path) -> None:
    m = np.zeros((4, 6), np.uint8)
    m[1:3, 1:4] = 2
    m[0, 0] = 255
    write_indexed_png(tmp_path / "a.png", m)
    got = mask_from_png(tmp_path / "a.png", (4, 6))
    assert got[0, 0] == 0 and (got[1:3, 1:4] == 2).all() and got.sum() == 2 * 6
    # the video's own size, before the page resized it: nearest-neighbour down to the frames
    big = np.kron(m, np.ones((2, 2), np.uint8))
    write_indexed_png(tmp_path / "big.png", big)
    np.testing.assert_array_equal(mask_from_png(tmp_path / "big.png", (4, 6), original_size=(8, 12)), got)
    with pytest.raises(ValueError, match=r"big.png: the mask is 12x8 but the frames are 6x4"):
        mask_from_png(tmp_path / "big.png", (4, 6))
    write_indexed_png(tmp_path / "empty.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(ValueError, match="empty.png: the mask holds no object"):
        mask_from_png(tmp_path / "empty.png", (4, 6))
    Image.new("RGB", (6, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png.*palette"):
        mask_from_png(tmp_path / "rgb.png", (4, 6))


# -- clips -------------------------------------------------------------------------------------


def test_resized_size() -> None:
    assert resized_size((480, 854), 240) == (240, 427)
    assert resized_size((854, 480), 240) == (427, 240)
    assert resized_size((100, 200), 240) == (100, 200)
    assert resized_size((100, 200), None) == (100, 200)


def test_load_clip_caps_and_resizes_a_frame_folder(tmp_path: Path) -> None:
    frames, _ = moving_objects(7, (40, 60))
    folder = tmp_path / "seq"
    folder.mkdir()
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{t:05d}.png")
    clip = load_clip(folder, max_frames=5, short_side=20)
    assert (len(clip), clip.size, clip.original_size, clip.total_frames, clip.name) == (5, (20, 30), (40, 60), 7, "seq")
    # the resize is torch's antialiased bilinear of the frames read
    ref = torch.nn.functional.interpolate(torch.from_numpy(frames[:5]).permute(0, 3, 1, 2).float(), size=(20, 30), mode="bilinear",
                                          antialias=True, align_corners=False)  # fmt: skip
    np.testing.assert_array_equal(clip.data, ref.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    whole = load_clip(folder, max_frames=None, short_side=None)
    np.testing.assert_array_equal(whole.data, frames)


def test_load_clip_bad_input_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises((VideoReadError, ImportError), match="broken.mp4"):
        load_clip(bad)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt: not a video file"):
        load_clip(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="nowhere.mp4"):
        load_clip(tmp_path / "nowhere.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no frames"):
        load_clip(tmp_path / "empty")


def test_sample_clips_lists_mp4s(tmp_path: Path) -> None:
    (tmp_path / "b.mp4").write_bytes(b"")
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "c.txt").write_bytes(b"")
    assert list(sample_clips(tmp_path)) == ["a.mp4", "b.mp4"]


def test_with_masks_checks_frame_size_and_objects() -> None:
    clip = ClipVideo("v", np.zeros((3, 4, 6, 3), np.uint8))
    ok = np.zeros((4, 6), np.uint8)
    ok[0, 0] = 1
    assert clip.with_masks({2: ok}).given_frames == [2]
    with pytest.raises(ValueError, match="frame 3, but the clip has frames 0..2"):
        clip.with_masks({3: ok})
    with pytest.raises(ValueError, match="the mask of frame 0 is 5x4 but the frames are 6x4"):
        clip.with_masks({0: np.ones((4, 5), np.uint8)})
    with pytest.raises(ValueError, match="the mask of frame 1 holds no object"):
        clip.with_masks({1: np.zeros((4, 6), np.uint8)})


# -- propagation: the same as tools/propagate.py --------------------------------------------------


@pytest.mark.parametrize(("protocol", "keyframes"), [("corrflow", None), ("crw", [0, 7])])
def test_propagate_clip_writes_what_tools_propagate_writes(tmp_path: Path, protocol: str, keyframes) -> None:
    n = 10
    root = write_davis_tree(tmp_path / "DAVIS", {"seq": n}, size=(32, 48), annotate_every=7)
    extra = [f"task.keyframes=[{','.join(map(str, keyframes))}]"] if keyframes else []
    ref = propagate(compose_cfg("task=davis", f"data.root={root}", "task.dataset.split=train", f"output_dir={tmp_path / 'ref'}",
                                "features=lab", f"protocol={protocol}", "score=false", "overlay=null", *extra))  # fmt: skip
    ref_dir = Path(ref["results_dir"]) / "seq"

    clip = load_clip(root / "JPEGImages" / "480p" / "seq", max_frames=None, short_side=None)
    adir = root / "Annotations" / "480p" / "seq"
    masks = {t: read_indexed_png(adir / f"{t:05d}.png") for t in (keyframes or [0])}
    calls = []
    got = propagate_clip(clip.with_masks(masks), tmp_path / "demo", segmenters=Segmenters(), features="lab", protocol=protocol,
                         on_frame=lambda done, total: calls.append((done, total)))  # fmt: skip

    assert calls == [(i, n) for i in range(1, n + 1)]
    assert got.keyframes == (keyframes or [0]) and got.n_frames == n
    for t in range(n):
        np.testing.assert_array_equal(read_indexed_png(got.results_dir / f"{t:05d}.png"), read_indexed_png(ref_dir / f"{t:05d}.png"), err_msg=f"frame {t}")
    with zipfile.ZipFile(got.zip_path) as z:
        assert sorted(z.namelist()) == [f"Annotations/seq/{t:05d}.png" for t in range(n)]
        assert z.read("Annotations/seq/00003.png") == (got.results_dir / "00003.png").read_bytes()
    assert len(got.overlay_paths) == n and all(p.is_file() for p in got.overlay_paths)
    with Image.open(got.gif_path) as gif:
        assert gif.n_frames == n and gif.size == (48, 32)
    assert f"{n} frames (48x32)" in got.summary and f"protocol={protocol}" in got.summary


def _tiny_clip(n: int = 6) -> ClipVideo:
    frames, masks = moving_objects(n, (24, 32))
    return ClipVideo("tiny", frames, {0: masks[0]})


def test_cancel_stops_the_run(tmp_path: Path) -> None:
    cancel = threading.Event()

    def on_frame(done, total):
        if done == 2:
            cancel.set()

    with pytest.raises(Cancelled, match="after 2 of 6 frames"):
        propagate_clip(_tiny_clip(), tmp_path, segmenters=Segmenters(), features="lab", protocol="corrflow", on_frame=on_frame, cancel=cancel)


def test_bad_runs_are_user_errors(tmp_path: Path) -> None:
    segmenters = Segmenters()
    clip = _tiny_clip()
    with pytest.raises(ValueError, match="no mask given"):
        propagate_clip(ClipVideo("x", clip.data), tmp_path, segmenters=segmenters)
    other = np.zeros(clip.size, np.uint8)
    other[:4, :4] = 2
    with pytest.raises(ValueError, match="every keyframe must give the same objects"):
        propagate_clip(clip.with_masks({0: clip.masks[0], 3: other}), tmp_path, segmenters=segmenters, features="lab")
    with pytest.raises(ValueError, match="features must be one of"):
        propagate_clip(clip, tmp_path, segmenters=segmenters, features="sift")
    for ckpt, match in [(None, "needs a checkpoint"), (tmp_path / "missing.ckpt", "missing.ckpt")]:
        with pytest.raises(Exception) as info:
            propagate_clip(clip, tmp_path, segmenters=segmenters, features="checkpoint", ckpt=ckpt)
        assert find_user_error(info.value) is not None and info.match(match)
    wrong = tmp_path / "wrong.ckpt"
    torch.save({"state_dict": {"net.weight": torch.zeros(1)}}, wrong)
    with pytest.raises(Exception) as info:
        propagate_clip(clip, tmp_path, segmenters=segmenters, features="checkpoint", ckpt=str(wrong))
    assert find_user_error(info.value) is not None and "wrong.ckpt" in str(find_user_error(info.value))
