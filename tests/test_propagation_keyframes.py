"""Keyframes: the fusion weights, backward propagation against forward propagation of the reversed
video, the fused run end to end (keyframes written as given, not scored), and the errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from corrflow.propagation.keyframes import fusion_weights, resolve_keyframes, segments
from corrflow.propagation.run import propagate
from corrflow.utils.io import read_indexed_png, write_indexed_png
from tests.test_data_davis import make_davis_tree
from tests.test_tools_propagate import compose_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

SEQ = "squares-a"


def test_fusion_weights_at_the_keyframes_and_halfway() -> None:
    for mode in ("linear", "nearest"):
        assert fusion_weights(10, 10, 30, mode=mode) == (1.0, 0.0)  # the earlier keyframe alone
        assert fusion_weights(30, 10, 30, mode=mode) == (0.0, 1.0)  # the later keyframe alone
        assert fusion_weights(20, 10, 30, mode=mode) == (0.5, 0.5)  # halfway: one half each
    assert fusion_weights(15, 10, 30) == (0.75, 0.25)
    assert fusion_weights(15, 10, 30, mode="nearest") == (1.0, 0.0)
    assert fusion_weights(26, 10, 30, mode="nearest") == (0.0, 1.0)
    w = [sum(fusion_weights(t, 3, 11)) for t in range(3, 12)]
    assert w == [1.0] * 9
    with pytest.raises(ValueError, match="must lie between"):
        fusion_weights(2, 3, 11)
    with pytest.raises(ValueError, match="fusion must be one of"):
        fusion_weights(4, 3, 11, mode="cubic")


def test_keyframe_specs_and_segments() -> None:
    assert resolve_keyframes([40, 0, 80], 100) == [0, 40, 80]
    assert resolve_keyframes("every_20", 50) == [0, 20, 40]
    assert resolve_keyframes("count_3", 11) == [0, 5, 10]
    assert resolve_keyframes("count_1", 11) == [0]
    assert resolve_keyframes("all_given", 9, given=[0, 4]) == [0, 4]
    with pytest.raises(ValueError, match=r"/videos/x: keyframe 80 lies past the video's end \(it has 50 frames"):
        resolve_keyframes([0, 80], 50, where="/videos/x")
    with pytest.raises(ValueError, match="'every_N'"):
        resolve_keyframes("every_0", 50)
    assert [(a, b, list(r)) for a, b, r in segments([2, 5], 7)] == [(None, 2, [0, 1]), (2, 5, [3, 4]), (5, None, [6])]
    assert [(a, b, list(r)) for a, b, r in segments([0, 1], 2)] == []


def _reverse_davis(src: Path, dst: Path, name: str, n: int) -> None:
    """The sequence with its frames (and annotations) in reverse order."""
    for kind in ("JPEGImages", "Annotations"):
        d = dst / kind / "480p" / name
        d.mkdir(parents=True)
        for t in range(n):
            shutil.copy(src / kind / "480p" / name / f"{t:05d}.png", d / f"{n - 1 - t:05d}.png")
    (dst / "ImageSets" / "2017").mkdir(parents=True)
    (dst / "ImageSets" / "2017" / "val.txt").write_text(f"{name}\n")


def _preds(out: Path, n: int) -> np.ndarray:
    return np.stack([read_indexed_png(out / "results" / SEQ / f"{t:05d}.png") for t in range(n)])


@pytest.mark.parametrize("protocol", ["crw", "corrflow"])
def test_backward_propagation_equals_forward_propagation_of_the_reversed_video(tmp_path: Path, protocol: str) -> None:
    n = 6
    root = make_davis_tree(tmp_path / "DAVIS", {SEQ: n})
    rev = tmp_path / "REV"
    _reverse_davis(root, rev, SEQ, n)
    common = ("task=davis", "features=lab", f"protocol={protocol}", "score=false", "overlay=null")
    propagate(compose_cfg(*common, f"data.root={root}", f"output_dir={tmp_path / 'back'}", f"task.keyframes=[{n - 1}]"))
    propagate(compose_cfg(*common, f"data.root={rev}", f"output_dir={tmp_path / 'fwd'}"))
    back, fwd = _preds(tmp_path / "back", n), _preds(tmp_path / "fwd", n)
    assert np.array_equal(back, fwd[::-1])
    assert (back[:-1] != 0).any()  # something was propagated


def test_keyframes_fuse_both_directions_and_are_not_scored(tmp_path: Path) -> None:
    """keyframes=[0, 5] with nearest fusion: frames 1-2 are the forward run, 3-4 the backward one
    (frames 1..4 of the plain run, and of the reversed video's); the keyframes are written as given."""
    n = 6
    root = make_davis_tree(tmp_path / "DAVIS", {SEQ: n})
    rev = tmp_path / "REV"
    _reverse_davis(root, rev, SEQ, n)
    common = ("task=davis", "features=lab", "protocol=crw", "overlay=null")
    near = propagate(compose_cfg(*common, f"data.root={root}", f"output_dir={tmp_path / 'near'}", "task.keyframes=[0,5]",
                                 "task.fusion=nearest"))  # fmt: skip
    propagate(compose_cfg(*common, f"data.root={root}", f"output_dir={tmp_path / 'fwd'}", "score=false"))
    propagate(compose_cfg(*common, f"data.root={rev}", f"output_dir={tmp_path / 'rev'}", "score=false"))
    pred, fwd, bwd = _preds(tmp_path / "near", n), _preds(tmp_path / "fwd", n), _preds(tmp_path / "rev", n)[::-1]
    gt = np.stack([read_indexed_png(root / "Annotations" / "480p" / SEQ / f"{t:05d}.png") for t in range(n)])
    assert np.array_equal(pred[[0, 5]], gt[[0, 5]])
    assert np.array_equal(pred[1:3], fwd[1:3]) and np.array_equal(pred[3:5], bwd[3:5])
    assert near["scores"] is not None and near["sequences"][0]["frames"] == 2 + 4 + 4  # keyframes once, 4 frames each way
    # Linear fusion runs too; a keyframe's result is not read when scoring (removing it changes nothing).
    lin_out = tmp_path / "lin"
    lin = propagate(compose_cfg(*common, f"data.root={root}", f"output_dir={lin_out}", "task.keyframes=[0,3]"))
    from corrflow.evaluation.davis import evaluate_davis

    (lin_out / "results" / SEQ / "00003.png").unlink()
    again = evaluate_davis(lin_out / "results", root, sequences=[SEQ], exclude_frames={SEQ: [0, 3]}, progress=False,
                           output_dir=tmp_path / "s")  # fmt: skip
    assert again.jf_mean == pytest.approx(lin["scores"]["J&F-Mean"])
    # The scored frames are 1, 2, 4: a perfect result there scores 1 whatever frame 3 holds.
    perfect = tmp_path / "perfect" / SEQ
    for t in (1, 2, 4):
        write_indexed_png(perfect / f"{t:05d}.png", gt[t])
    best = evaluate_davis(perfect.parent, root, sequences=[SEQ], exclude_frames={SEQ: [3]}, progress=False, output_dir=tmp_path / "s2")
    assert best.jf_mean == 1.0


def test_keyframe_errors_name_the_file_and_frame(tmp_path: Path) -> None:
    root = make_davis_tree(tmp_path / "DAVIS", {SEQ: 6})
    base = ("task=davis", "features=lab", f"data.root={root}", f"output_dir={tmp_path / 'o'}")
    with pytest.raises(ValueError, match=r"480p/squares-a: keyframe 9 lies past the video's end \(it has 6 frames"):
        propagate(compose_cfg(*base, "task.keyframes=[0,9]"))
    mask = read_indexed_png(root / "Annotations" / "480p" / SEQ / "00004.png")
    write_indexed_png(root / "Annotations" / "480p" / SEQ / "00004.png", np.where(mask == 2, 0, mask))
    with pytest.raises(ValueError, match=r"00004\.png: keyframe 4 holds objects \[1\], but keyframe 0 .*00000\.png\) holds \[1, 2\]"):
        propagate(compose_cfg(*base, "task.keyframes=[0,4]"))
    for p in (root / "Annotations" / "480p" / SEQ).glob("*.png"):
        p.unlink()
    with pytest.raises(FileNotFoundError, match=r"Annotations/480p/squares-a: the annotation folder holds no mask"):
        propagate(compose_cfg(*base, "task.keyframes=all_given", "task.targets.validate_annotations=false"))
    assert not (tmp_path / "o" / "results").exists()  # inputs are checked before anything is written


def test_keyframes_and_late_objects_change_the_fingerprint_and_defaults_do_not() -> None:
    from corrflow.propagation.run import fingerprint

    base = fingerprint(compose_cfg("task=davis", "features=lab"))
    assert fingerprint(compose_cfg("task=davis", "features=lab", "task.fusion=linear", "task.late_objects=false")) == base
    keyed = fingerprint(compose_cfg("task=davis", "features=lab", "task.keyframes=[0,3]"))
    assert len({base, keyed, fingerprint(compose_cfg("task=davis", "features=lab", "task.keyframes=[0,3]", "task.fusion=nearest")),
                fingerprint(compose_cfg("task=davis", "features=lab", "task.late_objects=true"))}) == 4


def test_stm_takes_keyframes_and_refuses_late_objects(tmp_path: Path) -> None:
    """method=stm runs the keyframe passes (its soft outputs are fused at the frame's pixels); it has
    no ``join``, so late objects get a one-line reason before anything is written."""
    from tests.test_propagation_late_objects import make_late_davis
    from tests.test_propagation_stm import save_stm_checkpoint

    ckpt = save_stm_checkpoint(tmp_path / "stm.ckpt")
    root = make_davis_tree(tmp_path / "DAVIS", {SEQ: 6})
    out = tmp_path / "stm"
    result = propagate(compose_cfg("task=davis", "method=stm", f"ckpt={ckpt}", f"data.root={root}", f"output_dir={out}",
                                   "task.keyframes=[0,5]", "overlay=null"))  # fmt: skip
    gt = np.stack([read_indexed_png(root / "Annotations" / "480p" / SEQ / f"{t:05d}.png") for t in range(6)])
    pred = _preds(out, 6)
    assert np.array_equal(pred[[0, 5]], gt[[0, 5]]) and set(np.unique(pred).tolist()) <= {0, 1, 2}
    assert result["sequences"][0]["frames"] == 2 + 4 + 4
    late = make_late_davis(tmp_path / "LATE")
    with pytest.raises(ValueError, match=r"late: objects enter after the first given frame .*00005\.png.*method=stm cannot take"):
        propagate(compose_cfg("task=davis", "method=stm", f"ckpt={ckpt}", f"data.root={late}", f"output_dir={tmp_path / 'o'}",
                              "task.late_objects=true"))  # fmt: skip
    assert not (tmp_path / "o" / "results").exists()


def _stm_pass(net, frames: list, start: int, order: list[int], gt: np.ndarray):
    """{t: (1 + N, H, W) probabilities} of a fresh STMInference started at frame ``start`` with its
    ground truth and fed the frames ``order``: a pass that remembers nothing from before."""
    from corrflow.models.segmenters import STMInference

    state = STMInference(net, every=5, max_frames=20)
    state.step(frames[start], gt[start])
    return {t: state.step(frames[t]) for t in order}, state.object_ids


def test_stm_keyframe_passes_each_start_from_an_empty_memory(tmp_path: Path) -> None:
    """Keyframes 0, 3 and 6 of 9 frames: the frames of each span are the linear fusion of a forward
    pass from the earlier keyframe and a backward pass from the later one, and each pass equals
    STMInference started afresh at its keyframe, by hand. A backward pass that kept the memory
    of the forward pass before it (frames 0-2 in the pass from 6) gives other predictions."""
    import torch
    from PIL import Image

    from corrflow.models.segmenters import load_segmenter
    from tests.test_propagation_stm import save_stm_checkpoint

    n, keys = 9, (0, 3, 6)
    ckpt = save_stm_checkpoint(tmp_path / "stm.ckpt")
    # the mask inputs' weights as after training (zero at the start: the memory would not see the masks)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    weight = saved["state_dict"]["net.memory_encoder.extra_conv.weight"]
    weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    torch.save(saved, ckpt)
    root = make_davis_tree(tmp_path / "DAVIS", {SEQ: n})
    out = tmp_path / "out"
    propagate(compose_cfg("task=davis", "method=stm", f"ckpt={ckpt}", f"data.root={root}", f"output_dir={out}", "score=false",
                          "overlay=null", f"task.keyframes=[{','.join(map(str, keys))}]"))  # fmt: skip
    got = _preds(out, n)
    gt = np.stack([read_indexed_png(root / "Annotations" / "480p" / SEQ / f"{t:05d}.png") for t in range(n)])
    frames = [torch.from_numpy(np.array(Image.open(root / "JPEGImages" / "480p" / SEQ / f"{t:05d}.png").convert("RGB"))).permute(2, 0, 1).float() / 255
              for t in range(n)]  # fmt: skip
    net = load_segmenter(ckpt)
    want = gt.copy()  # the keyframes as given
    for a, b, span in segments(keys, n):
        fwd, ids = _stm_pass(net, frames, a, list(span), gt) if a is not None else ({}, None)
        bwd, ids = _stm_pass(net, frames, b, list(reversed(span)), gt) if b is not None else ({}, ids)
        for t in span:
            if a is not None and b is not None:
                wf, wb = fusion_weights(t, a, b)
                probs = wf * fwd[t] + wb * bwd[t]
            else:
                probs = fwd[t] if a is not None else bwd[t]
            want[t] = np.array([0, *ids], np.uint8)[probs.argmax(0).numpy()]
    assert (want[[1, 2, 4, 5, 7, 8]] != 0).any()  # something was propagated
    for t in range(n):
        np.testing.assert_array_equal(got[t], want[t], err_msg=f"frame {t}")


@pytest.mark.slow  # about 8 s: two runs, a plain one, and matplotlib
def test_keyframe_study_writes_table_rows_and_plot(tmp_path: Path) -> None:
    """tools/benchmark.py keyframes: one run a setting; count_1 scores as the plain run does."""
    import json

    from corrflow.benchmarks.keyframes import main

    root = make_davis_tree(tmp_path / "DAVIS", {"a": 9, "b": 8})
    common = ["task=davis", f"data.root={root}", "features=lab", "protocol=crw"]
    main(["--out", str(tmp_path / "kf"), "--work", str(tmp_path / "work"), "--settings", "count_1", "count_3", "--", *common])
    rows = json.loads((tmp_path / "kf.json").read_text())
    assert [r["setting"] for r in rows] == ["count_1", "count_3"] and [r["keyframes"] for r in rows] == [1.0, 3.0]
    assert "| count_3 | 3.0 |" in (tmp_path / "kf.md").read_text() and (tmp_path / "kf.png").stat().st_size > 1000
    plain = propagate(compose_cfg(*common, f"output_dir={tmp_path / 'plain'}", "overlay=null"))
    assert rows[0]["J&F"] == pytest.approx(plain["scores"]["J&F-Mean"])
