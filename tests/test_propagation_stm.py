"""``tools/propagate.py method=stm``: a (tiny, untrained) STM segmenter checkpoint, saved as
tools/finetune.py saves one, segments generated DAVIS trees through ``propagate(cfg)``: the same
writing, scoring, overlays, resume and input checks as label propagation, predictions identical to
:class:`STMInference` run by hand, bounded memory, and wrong-kind checkpoints refused both ways.
Label propagation keeps its folder names and fingerprints (finished runs still resume)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from corrflow.models.segmenters import STMInference, load_segmenter
from corrflow.propagation.methods import STMVideoSegmenter, checkpoint_tag
from corrflow.propagation.run import fingerprint, propagate
from corrflow.propagation.targets import MaskTargets
from corrflow.utils.io import read_indexed_png
from tests.helpers.vos_synthetic import moving_objects, write_davis_tree
from tests.test_data_jhmdb import make_jhmdb_tree
from tests.test_tools_propagate import CONF_DIR, compose_cfg, make_checkpoint

HAS_EVALUATION = importlib.util.find_spec("corrflow.evaluation") is not None

pytestmark = pytest.mark.usefixtures("one_thread")


def save_stm_checkpoint(path: Path) -> Path:
    """An untrained STM (the narrow preset, CRW-variant backbone) saved as tools/finetune.py does:
    the LightningModule built from conf/model/stm_narrow.yaml and its ``on_save_checkpoint``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="finetune", overrides=["model=stm_narrow", "model.backbone.arch=crw"])
    GlobalHydra.instance().clear()
    torch.manual_seed(0)
    lit = instantiate(cfg.model)
    ckpt = {"state_dict": lit.state_dict(), "global_step": 0}
    lit.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def stm_ckpt(tmp_path_factory) -> Path:
    return save_stm_checkpoint(tmp_path_factory.mktemp("stm") / "stm.ckpt")


@pytest.fixture
def davis_root(tmp_path: Path) -> Path:
    return write_davis_tree(tmp_path / "DAVIS", {"a": 7, "b": 5}, size=(32, 48), n_objects=2, split="val")


def run_stm(root: Path, out: Path, ckpt: Path, *extra: str) -> dict:
    return propagate(compose_cfg("task=davis", "method=stm", f"ckpt={ckpt}", f"data.root={root}", f"output_dir={out}", *extra))


def reference_ids(root: Path, seq: str, ckpt: Path, *, every: int, max_frames: int) -> np.ndarray:
    """(T, H, W) ids from STMInference fed the sequence's frames by hand, from its first mask."""
    frames = sorted((root / "JPEGImages" / "480p" / seq).glob("*.png"))
    state = STMInference(load_segmenter(ckpt), every=every, max_frames=max_frames)
    gt0 = read_indexed_png(root / "Annotations" / "480p" / seq / "00000.png")
    out = [gt0]
    for t, f in enumerate(frames):
        image = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 255
        probs = state.step(image, gt0 if t == 0 else None)
        if t:
            out.append(np.array([0, *state.object_ids], np.uint8)[probs.argmax(0).numpy()])
    return np.stack(out)


# -- the run -----------------------------------------------------------------------------------

def test_stm_segments_every_frame_writes_scores_and_matches_stm_inference(davis_root: Path, stm_ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    result = run_stm(davis_root, out, stm_ckpt, "method.memory_every=2", "method.max_memory_frames=3")
    for seq, n in (("a", 7), ("b", 5)):
        pngs = sorted((out / "results" / seq).glob("*.png"))
        assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(n)]
        for p in pngs:
            with Image.open(p) as im:
                assert im.mode == "P" and im.size == (48, 32)
        pred = np.stack([read_indexed_png(p) for p in pngs])
        assert set(np.unique(pred).tolist()) <= {0, 1, 2}
        # the run's writing and channel order against STM's own inference with the same memory
        np.testing.assert_array_equal(pred, reference_ids(davis_root, seq, stm_ckpt, every=2, max_frames=3))
        assert (out / "results" / f"{seq}.done").is_file()
        assert (out / "overlays" / f"{seq}.png").is_file() and (out / "overlays" / f"{seq}.gif").is_file()
    assert [r["sequence"] for r in result["sequences"]] == ["a", "b"]
    assert all(r["s/frame"] > 0 for r in result["sequences"]) and result["seconds_per_frame"] > 0
    assert "s a frame" in capsys.readouterr().out
    recorded = OmegaConf.load(out / "config.yaml")
    assert recorded.method.name == "stm" and recorded.method.max_memory_frames == 3
    assert "features" not in recorded and "protocol" not in recorded  # unused by STM, not recorded
    seg = instantiate(recorded.method.segmenter)(device=torch.device("cpu"), targets=MaskTargets())
    assert (seg.inference.every, seg.inference.max_frames, seg.stride) == (2, 3, 1)
    if HAS_EVALUATION:
        assert (out / "scores" / "global_results-val.csv").is_file()
        assert (out / "scores" / "per-sequence_results-val.csv").is_file()
        from tests.helpers.davis_rescore import jf_mean_from_files

        assert result["scores"]["J&F-Mean"] == pytest.approx(jf_mean_from_files(out / "results", davis_root, ["a", "b"]), abs=1e-9)


def test_stm_resumes_finished_sequences_and_redoes_on_another_memory_setting(davis_root: Path, stm_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    extra = ("overlay=null", "score=false")
    assert run_stm(davis_root, out, stm_ckpt, *extra)["skipped"] == []
    a_times = {p.name: p.stat().st_mtime_ns for p in (out / "results" / "a").glob("*.png")}
    (out / "results" / "b.done").unlink()  # b was interrupted
    second = run_stm(davis_root, out, stm_ckpt, *extra)
    assert second["skipped"] == ["a"]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "results" / "a").glob("*.png")} == a_times
    assert json.loads((out / "results" / "b.done").read_text())["frames"] == 5
    assert run_stm(davis_root, out, stm_ckpt, *extra)["skipped"] == ["a", "b"]
    # the memory decides the predictions: another cap redoes both
    assert run_stm(davis_root, out, stm_ckpt, *extra, "method.max_memory_frames=2")["skipped"] == []


def test_stm_on_davis2016_single_object(tmp_path: Path, stm_ckpt: Path) -> None:
    root = write_davis_tree(tmp_path / "DAVIS", {"c": 4, "d": 4}, size=(32, 40), n_objects=1, year="2016", split="dev")
    out = tmp_path / "out"
    result = propagate(compose_cfg(
        "task=davis2016", "method=stm", f"ckpt={stm_ckpt}", f"data.root={root}", "task.dataset.split=dev",
        "task.dataset.sequences=[d]", f"output_dir={out}", "overlay=null",
    ))  # fmt: skip
    assert [r["sequence"] for r in result["sequences"]] == ["d"] and not (out / "results" / "c").exists()
    pred = np.stack([read_indexed_png(p) for p in sorted((out / "results" / "d").glob("*.png"))])
    assert pred.shape == (4, 32, 40) and set(np.unique(pred).tolist()) <= {0, 1}
    if HAS_EVALUATION:
        assert (out / "scores" / "global_results-dev.csv").is_file()


# -- configs and folder names ------------------------------------------------------------------

def test_output_folders_name_the_method_and_label_propagation_keeps_its_names() -> None:
    cfg = compose_cfg("task=davis", "method=stm", "ckpt=/x/logs/finetune/runs/2024-05-01_10-00-00/checkpoints/final.ckpt")
    assert cfg.output_dir.endswith("/propagate/davis-stm-2024-05-01_10-00-00-final")
    assert compose_cfg("task=davis2016", "method=stm", "ckpt=/x/my_stm.ckpt").output_dir.endswith("/propagate/davis2016-stm-my_stm")
    assert compose_cfg("task=davis").method.name == "label_propagation"
    assert compose_cfg("task=davis").output_dir.endswith("/propagate/davis-crw-checkpoint")
    assert compose_cfg("task=jhmdb", "protocol=corrflow", "features=lab").output_dir.endswith("/propagate/jhmdb-corrflow-lab")
    assert checkpoint_tag(None) == "none" and checkpoint_tag("a/b/c.ckpt") == "c"


# Label propagation's fingerprints as the done-files of finished runs hold them, frozen (not
# recomputed by a copy of the code): a change to what enters the hash, or how, fails here, and a
# finished run would redo its sequences. The checkpoint is named, not read (absent: no size or time).
FROZEN_FINGERPRINTS = {
    ("task=davis", "features=lab"): "22a950ad2eb330d5",
    ("task=davis2016", "protocol=corrflow", "features=random"): "dc164ab88474db09",
    ("task=jhmdb", "features=checkpoint"): "a6efb13151f76eb6",
}


@pytest.mark.parametrize("overrides", sorted(FROZEN_FINGERPRINTS))
def test_label_propagation_fingerprints_are_unchanged(overrides: tuple[str, ...], monkeypatch) -> None:
    """Done-files written before the method group still match: finished sequences stay skipped."""
    for var in ("CORRFLOW_ROOT", "CORRFLOW_DATA"):  # the data root enters the hash: the default's
        monkeypatch.delenv(var, raising=False)
    cfg = compose_cfg(*overrides, "ckpt=/frozen/enc.ckpt")
    assert fingerprint(cfg) == FROZEN_FINGERPRINTS[overrides]
    assert fingerprint(compose_cfg(*overrides, "ckpt=/frozen/enc.ckpt", "method=stm")) != fingerprint(cfg)


# -- bounded memory ----------------------------------------------------------------------------

def expected_memory(t: int, every: int, cap: int) -> list[int]:
    """The frames read at step t: 0, the last cap - 2 multiples of ``every`` before t, and t - 1."""
    periodic = [i for i in range(1, t) if i % every == 0][-(cap - 2) :] if cap > 2 else []
    return sorted({0, *periodic, t - 1})


def test_memory_stays_bounded_on_a_long_video(stm_ckpt: Path) -> None:
    seg = STMVideoSegmenter(load_segmenter(stm_ckpt), memory_every=5, max_memory_frames=4)
    frames, masks = moving_objects(80, (16, 24), n_objects=2, seed=3)
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    onehot = torch.stack([torch.from_numpy(masks[0] == i).float() for i in range(3)])  # (1 + N, H, W)
    first = seg.step(images[0], onehot)
    torch.testing.assert_close(first, onehot)
    for t in range(1, 80):
        assert seg.memory_frames == expected_memory(t, 5, 4), t
        probs = seg.step(images[t])
        assert probs.shape == (3, 16, 24)
        torch.testing.assert_close(probs.sum(0), torch.ones(16, 24))
    assert seg.memory_frames == [0, 70, 75, 79]
    # a new video starts afresh
    seg.step(images[0], onehot)
    assert seg.memory_frames == [0]


def test_a_first_frame_without_objects_gives_background(stm_ckpt: Path) -> None:
    seg = STMVideoSegmenter(load_segmenter(stm_ckpt))
    frame = torch.rand(3, 16, 24)
    assert torch.equal(seg.step(frame, torch.ones(1, 16, 24)), torch.ones(1, 16, 24))
    assert torch.equal(seg.step(frame), torch.ones(1, 16, 24))
    assert seg.memory_frames == []


# -- bad input ---------------------------------------------------------------------------------

def test_wrong_kind_of_checkpoint_both_ways(davis_root: Path, stm_ckpt: Path, tmp_path: Path) -> None:
    pre = make_checkpoint(tmp_path / "pre.ckpt")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"pre\.ckpt is a corrflow pretraining checkpoint .*not an STM segmenter checkpoint: "
                       r"propagate labels with its features \(method=label_propagation features=checkpoint"):  # fmt: skip
        run_stm(davis_root, out, pre)
    with pytest.raises(Exception, match=r"stm\.ckpt is an STM segmenter checkpoint .*not a corrflow training checkpoint.*method=stm ckpt="):
        propagate(compose_cfg("task=davis", "features=checkpoint", f"ckpt={stm_ckpt}", f"data.root={davis_root}", f"output_dir={out}"))
    with pytest.raises(ValueError, match=r"method=stm needs an STM checkpoint: ckpt="):
        propagate(compose_cfg("task=davis", "method=stm", f"data.root={davis_root}", f"output_dir={out}"))
    with pytest.raises(FileNotFoundError, match=r"gone\.ckpt: STM checkpoint not found"):
        run_stm(davis_root, out, tmp_path / "gone.ckpt")
    assert not out.exists()  # nothing written by a run whose inputs fail


def test_stm_refuses_keypoint_tasks(tmp_path: Path, stm_ckpt: Path) -> None:
    root = make_jhmdb_tree(tmp_path / "JHMDB")
    with pytest.raises(ValueError, match=r"method=stm segments object masks.*KeypointTargets.*method=label_propagation"):
        propagate(compose_cfg("task=jhmdb", "method=stm", f"ckpt={stm_ckpt}", f"data.root={root}", f"output_dir={tmp_path / 'out'}"))
    assert not (tmp_path / "out").exists()


def test_entry_script_pretraining_checkpoint_for_stm_is_one_line(davis_root: Path, tmp_path: Path) -> None:
    from tests.test_tools_propagate import REPO
    from tests.test_utils_cli import assert_one_clear_line, run_tool

    pre = make_checkpoint(tmp_path / "pre.ckpt")
    proc = run_tool(
        REPO / "tools" / "propagate.py", "task=davis", "method=stm", f"ckpt={pre}", f"data.root={davis_root}",
        f"output_dir={tmp_path / 'out'}", "progress=false", f"hydra.run.dir={tmp_path / 'hydra'}",
    )  # fmt: skip
    assert_one_clear_line(proc, r"^error: ckpt=.*pre\.ckpt is a corrflow pretraining checkpoint .*method=label_propagation")
    assert not (tmp_path / "out").exists()


def test_short_side_segments_resized_frames_and_returns_frame_size_probabilities(stm_ckpt: Path) -> None:
    """method.short_side: the network sees each frame resized (aspect kept) and the first frame's
    masks area-averaged to that size; the probabilities come back at the frame's size, still a
    distribution, and equal STMInference fed the resized frames by hand, bilinearly resized back."""
    frames, masks = moving_objects(6, size=(40, 64), n_objects=2, seed=3)  # (T, H, W, 3) uint8, (T, H, W)
    frames = torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255
    gt0 = torch.as_tensor(masks[0]).long()
    labels = torch.stack([gt0 == i for i in range(3)]).float()  # (1 + N, H, W) one-hot
    seg = STMVideoSegmenter(load_segmenter(stm_ckpt), memory_every=2, max_memory_frames=4, short_side=20)
    assert seg.resize.size((40, 64)) == (20, 32)
    first = seg.step(frames[0], labels)
    assert torch.equal(first, labels)  # the given labels, exactly, at the frame's size

    ref = STMInference(load_segmenter(stm_ckpt), every=2, max_frames=4)
    small = torch.nn.functional.interpolate(frames, size=(20, 32), mode="bilinear", antialias=True, align_corners=False)
    ref.start(small[0], torch.nn.functional.interpolate(labels[None, 1:], size=(20, 32), mode="area")[0])
    for t in range(1, 6):
        out = seg.step(frames[t])
        assert out.shape == (3, 40, 64)
        torch.testing.assert_close(out.sum(0), torch.ones(40, 64), atol=1e-5, rtol=0)
        expected = torch.nn.functional.interpolate(ref.step(small[t])[None], size=(40, 64), mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_short_side_is_part_of_the_fingerprint_and_rejects_tiny_sizes(stm_ckpt: Path) -> None:
    a = compose_cfg("task=davis", "method=stm", f"ckpt={stm_ckpt}")
    b = compose_cfg("task=davis", "method=stm", f"ckpt={stm_ckpt}", "method.short_side=240")
    assert b.method.segmenter.short_side == 240
    assert fingerprint(a) != fingerprint(b)
    with pytest.raises(ValueError, match="short_side"):
        STMVideoSegmenter(load_segmenter(stm_ckpt), short_side=4)
