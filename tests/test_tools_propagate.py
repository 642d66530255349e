"""tools/propagate.py and ``propagate(cfg)`` end to end on tiny generated data: every task,
protocol and feature config, resuming, and the errors a user meets."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from corrflow.models.checkpoint import encoder_payload
from corrflow.models.encoder import corrflow_encoder
from corrflow.propagation.run import propagate
from corrflow.utils.io import read_indexed_png, write_indexed_png
from tests.test_data_davis import make_davis_tree
from tests.test_data_jhmdb import make_jhmdb_tree
from tests.test_data_keypoint_videos import make_keypoint_tree

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = str(REPO / "conf")
HAS_EVALUATION = importlib.util.find_spec("corrflow.evaluation") is not None
HAS_IMAGENET = importlib.util.find_spec("efficientnet_lite_pytorch") is not None

pytestmark = pytest.mark.usefixtures("one_thread")



def compose_cfg(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="propagate", overrides=[*overrides, "progress=false"])
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def davis_root(tmp_path: Path) -> Path:
    return make_davis_tree(tmp_path / "DAVIS")


def run_davis(davis_root: Path, out: Path, *extra: str) -> dict:
    return propagate(compose_cfg("task=davis", f"data.root={davis_root}", f"output_dir={out}", *extra))


# -- configs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["davis", "davis2016", "jhmdb", "keypoints"])
@pytest.mark.parametrize("protocol", ["crw", "corrflow"])
def test_every_task_and_protocol_config_composes_and_builds(task: str, protocol: str) -> None:
    cfg = compose_cfg(f"task={task}", f"protocol={protocol}", "features=lab")
    assert cfg.task.name == task and cfg.protocol.name == protocol
    assert "${" not in cfg.output_dir and not Path(cfg.task.data_dir).is_absolute()
    targets = instantiate(cfg.task.targets)
    assert hasattr(targets, "start") and hasattr(targets, "evaluate")
    assert cfg.task.dataset._target_.startswith("corrflow.data.")
    prop = instantiate(cfg.protocol.propagator)(instantiate(cfg.features.extractor))
    assert prop.global_first == (protocol == "crw")
    assert (prop.n_recent, prop.radius, prop.topk, prop.feedback) == (
        (20, 12, 10, "soft") if protocol == "crw" else (1, 6, None, "argmax")
    )
    if HAS_EVALUATION:
        assert callable(instantiate(cfg.task.evaluation))


@pytest.mark.parametrize("features", ["lab", "random", "checkpoint", "imagenet"])
def test_every_features_config_builds(features: str, tmp_path: Path) -> None:
    if features == "imagenet" and not HAS_IMAGENET:
        pytest.skip("efficientnet-lite-pytorch is not installed")
    ckpt = make_checkpoint(tmp_path / "enc.ckpt")
    cfg = compose_cfg("task=davis", f"features={features}", f"ckpt={ckpt}")
    extractor = instantiate(cfg.features.extractor).eval()
    with torch.no_grad():
        out = extractor(torch.rand(1, 3, 32, 48))
    assert out.shape[-2:] == (32 // extractor.stride, 48 // extractor.stride)


def test_protocol_values_are_overridable() -> None:
    cfg = compose_cfg("protocol=crw", "protocol.propagator.topk=5", "protocol.propagator.n_recent=7", "features=lab")
    prop = instantiate(cfg.protocol.propagator)(instantiate(cfg.features.extractor))
    assert (prop.topk, prop.n_recent) == (5, 7)


# -- end to end --------------------------------------------------------------------------------

@pytest.mark.parametrize("features", ["lab", "random"])
@pytest.mark.parametrize("protocol", ["crw", "corrflow"])
def test_davis_end_to_end(davis_root: Path, tmp_path: Path, capsys, protocol: str, features: str) -> None:
    out = tmp_path / "out"
    result = run_davis(davis_root, out, f"protocol={protocol}", f"features={features}")
    results = out / "results"
    for name, n in (("squares-a", 6), ("squares-b", 5)):
        pngs = sorted((results / name).glob("*.png"))
        assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(n)]
        for p in pngs:
            with Image.open(p) as im:
                assert im.mode == "P" and im.size == (48, 32)
        pred = np.stack([read_indexed_png(p) for p in pngs])
        assert set(np.unique(pred).tolist()) <= {0, 1, 2}
        gt0 = read_indexed_png(davis_root / "Annotations" / "480p" / name / "00000.png")
        assert np.array_equal(pred[0], gt0)  # the query frame is the given mask
        assert (results / f"{name}.done").is_file()
        assert (out / "overlays" / f"{name}.png").is_file() and (out / "overlays" / f"{name}.gif").is_file()
    printed = capsys.readouterr().out
    assert "squares-a" in printed and "squares-b" in printed
    assert [r["sequence"] for r in result["sequences"]] == ["squares-a", "squares-b"]
    if HAS_EVALUATION:
        from tests.helpers.davis_rescore import jf_mean_from_files

        assert result["scores"]["J&F-Mean"] == pytest.approx(jf_mean_from_files(results, davis_root, ["squares-a", "squares-b"]), abs=1e-9)
        assert (out / "scores" / "global_results-val.csv").is_file()
        if features == "lab" and protocol == "crw":
            # Distinct colours on a two-colour background: Lab features track the squares.
            assert result["scores"]["J&F-Mean"] > 0.7


def test_reader_and_writer_threads_write_exactly_what_one_thread_writes(davis_root: Path, tmp_path: Path) -> None:
    """background=2 (a reader decoding ahead, a writer writing behind) against background=0: the
    same palette PNGs byte for byte, the same pictures, the same scores."""
    runs = {}
    for background in (0, 2):
        out = tmp_path / f"bg{background}"
        runs[background] = run_davis(davis_root, out, "protocol=crw", "features=lab", f"background={background}")
    a, b = _snapshot(tmp_path / "bg0"), _snapshot(tmp_path / "bg2")
    written = [k for k in a if k.startswith(("results/", "overlays/")) and not k.endswith(".done")]
    assert len([k for k in written if k.endswith(".png") and k.startswith("results/")]) == 11
    assert {k: a[k] for k in written} == {k: b[k] for k in written}
    if HAS_EVALUATION:
        assert runs[0]["scores"] == runs[2]["scores"]


def test_a_corrupt_frame_read_ahead_stops_the_run_with_its_own_error(davis_root: Path, tmp_path: Path) -> None:
    """The reader thread hits a corrupt frame: the run stops with the reader's error naming the
    file, the sequence finished before it keeps its results, the broken one is not marked done."""
    frame = davis_root / "JPEGImages" / "480p" / "squares-b" / "00003.png"
    frame.write_bytes(b"not an image")
    out = tmp_path / "out"
    with pytest.raises(Exception, match="00003"):
        run_davis(davis_root, out, "protocol=crw", "features=lab", "background=2")
    assert (out / "results" / "squares-a.done").is_file()
    assert not (out / "results" / "squares-b.done").exists()


@pytest.mark.parametrize("label_resize", ["code", "bilinear", "pool"])
def test_label_resize_modes_end_to_end(davis_root: Path, tmp_path: Path, label_resize: str) -> None:
    """Every way of bringing masks to the grid runs under the CorrFlow protocol, reaches the task's
    targets, and tracks the squares with Lab features (normalised, so that the most similar colour
    wins; the squares are cell-aligned, so the three modes agree here: their differences are in
    tests/test_propagation_labels.py)."""
    result = run_davis(
        davis_root, tmp_path / "out", "protocol=corrflow", "features=lab", f"protocol.label_resize={label_resize}",
        "protocol.propagator.normalize=true", "protocol.propagator.temperature=0.05",
    )  # fmt: skip
    assert len(list((tmp_path / "out" / "results" / "squares-a").glob("*.png"))) == 6
    assert OmegaConf.load(tmp_path / "out" / "config.yaml").task.targets.label_resize == label_resize
    if HAS_EVALUATION:
        assert result["scores"]["J&F-Mean"] > 0.3


def test_checkpoint_features_end_to_end(davis_root: Path, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "enc.ckpt")
    result = run_davis(davis_root, tmp_path / "out", "features=checkpoint", f"ckpt={ckpt}", "protocol=corrflow", "score=false")
    assert result["scores"] is None
    assert len(list((tmp_path / "out" / "results" / "squares-a").glob("*.png"))) == 6


@pytest.mark.parametrize("features", ["lab", "random"])
def test_davis2016_end_to_end(tmp_path: Path, features: str) -> None:
    root = make_davis_tree(tmp_path / "DAVIS", year="2016", split="dev", n_objects=1)
    out = tmp_path / "out"
    result = propagate(
        compose_cfg("task=davis2016", f"data.root={root}", "task.dataset.split=dev", f"output_dir={out}", f"features={features}")
    )
    assert result["skipped"] == []
    assert len(list((out / "results" / "squares-b").glob("*.png"))) == 5
    if HAS_EVALUATION:
        assert (out / "scores" / "global_results-dev.csv").is_file()
        assert result["scores"]["J&F-Mean"] > (0.5 if features == "lab" else 0.0)


def test_davis2016_release_end_to_end_matches_its_palette_version(tmp_path: Path) -> None:
    """task=davis2016 reads the official 2016 release (grayscale masks, object = 255, frame-pair
    split files under ImageSets/480p/) and the palette version of the same videos alike: the same
    predictions, pixel for pixel, and the same scores. task=davis (255 = void) says what to use."""
    release = make_davis_tree(tmp_path / "release", n_objects=1, layout="2016-release")
    palette = make_davis_tree(tmp_path / "palette", n_objects=1, year="2016")
    runs = {}
    for name, root in (("release", release), ("palette", palette)):
        runs[name] = propagate(compose_cfg(
            "task=davis2016", f"data.root={root}", f"output_dir={tmp_path / name / 'out'}", "features=lab", "overlay=null",
        ))  # fmt: skip
    for seq, n in (("squares-a", 6), ("squares-b", 5)):
        for t in range(n):
            a = read_indexed_png(tmp_path / "release" / "out" / "results" / seq / f"{t:05d}.png")
            b = read_indexed_png(tmp_path / "palette" / "out" / "results" / seq / f"{t:05d}.png")
            np.testing.assert_array_equal(a, b)
            assert set(np.unique(a).tolist()) <= {0, 1}
    if HAS_EVALUATION:
        assert runs["release"]["scores"] == runs["palette"]["scores"]
        assert runs["release"]["scores"]["J&F-Mean"] > 0.5
    with pytest.raises(ValueError, match=r"only ids 0 and 255.*task=davis2016"):
        propagate(compose_cfg("task=davis", f"data.root={release}", "task.dataset.year=2016", f"output_dir={tmp_path / 'x'}", "features=lab"))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("features", ["lab", "random"])
@pytest.mark.parametrize("protocol", ["crw", "corrflow"])
def test_jhmdb_end_to_end(tmp_path: Path, protocol: str, features: str) -> None:
    root = make_jhmdb_tree(tmp_path / "JHMDB")
    out = tmp_path / "out"
    result = propagate(compose_cfg(
        "task=jhmdb", f"data.root={root}", f"output_dir={out}", f"protocol={protocol}", f"features={features}",
        "task.targets.frame_size=null",  # the frames' own 24 x 32 (the default is CRW's 320 x 320)
    ))  # fmt: skip
    with np.load(out / "results" / "catch" / "clip_a.npz") as f:
        kp, found = f["keypoints"], f["found"]
    assert kp.shape == (5, 15, 2) and kp.dtype == np.float32 and found.shape == (5, 15)
    np.testing.assert_allclose(kp[0, 0], [4.0, 4.0])  # frame 0 is the query
    assert np.isfinite(kp[found]).all()
    if features == "lab":  # the texture moves one pixel a frame: Lab keeps most joints
        assert found.mean() > (0.95 if protocol == "crw" else 0.5)
    assert (out / "overlays" / "run" / "clip_b.gif").is_file()
    if HAS_EVALUATION:
        assert set(result["scores"]) == {"pck@0.1", "pck@0.2"}
        assert (out / "scores" / "pck_results.csv").is_file()


def test_jhmdb_frame_size_resizes_for_the_features_and_maps_predictions_back(tmp_path: Path) -> None:
    """With the frames resized (here to twice their size, 48 x 64) the joints are propagated on the
    resized frames, and the results come back in the frames' own pixels: they follow the texture,
    which moves one pixel a frame to the right, within a pixel (not at twice the coordinates)."""
    root = make_jhmdb_tree(tmp_path / "JHMDB")
    out = tmp_path / "out"
    propagate(compose_cfg(
        "task=jhmdb", f"data.root={root}", f"output_dir={out}", "protocol=crw", "features=lab",
        "task.targets.frame_size=[48,64]", "score=false",
    ))  # fmt: skip
    with np.load(out / "results" / "catch" / "clip_a.npz") as f:
        kp, found = f["keypoints"], f["found"]
    np.testing.assert_allclose(kp[0, 0], [4.0, 4.0])
    assert found.mean() > 0.95
    gx, gy = np.meshgrid(np.arange(5) * 4 + 4, np.arange(3) * 5 + 4)
    truth = np.stack([np.stack([gx.ravel() + t, gy.ravel()], axis=-1) for t in range(5)])  # (T, 15, 2)
    err = np.linalg.norm(kp - truth, axis=-1)[found]
    assert np.median(err) < 1.0, np.median(err)


@pytest.mark.parametrize("features", ["lab", "random"])
def test_keypoints_task_end_to_end(tmp_path: Path, features: str) -> None:
    root = make_keypoint_tree(tmp_path / "kp")
    out = tmp_path / "out"
    propagate(compose_cfg("task=keypoints", f"data.root={root}", f"output_dir={out}", f"features={features}"))
    with np.load(out / "results" / "dots.npz") as f:
        kp = f["keypoints"]
    assert kp.shape == (5, 3, 2)
    assert np.isnan(kp[0]).all()  # before the query frame
    np.testing.assert_allclose(kp[1, 0], [7.0, 5.0])  # the query frame is given
    assert np.isnan(kp[1:, 1]).all()  # invisible at the query: nothing to propagate
    if features == "lab":  # the texture moves one pixel a frame: Lab keeps hold of the points
        assert np.isfinite(kp[2:, [0, 2]]).all()


# -- resume ------------------------------------------------------------------------------------

def test_resume_skips_finished_sequences_and_redoes_a_half_written_one(davis_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_davis(davis_root, out, "features=lab", "protocol=corrflow")
    assert first["skipped"] == []
    results = out / "results"
    a_times = {p.name: p.stat().st_mtime_ns for p in (results / "squares-a").glob("*.png")}
    # squares-b was interrupted: no done-file, a missing frame and a stray temporary file.
    (results / "squares-b.done").unlink()
    (results / "squares-b" / "00004.png").unlink()
    (results / "squares-b" / ".00004.png.tmp").write_bytes(b"partial")
    second = run_davis(davis_root, out, "features=lab", "protocol=corrflow")
    assert second["skipped"] == ["squares-a"]
    assert {p.name: p.stat().st_mtime_ns for p in (results / "squares-a").glob("*.png")} == a_times
    assert sorted(p.name for p in (results / "squares-b").iterdir()) == [f"{t:05d}.png" for t in range(5)]
    assert json.loads((results / "squares-b.done").read_text())["frames"] == 5
    # Selecting fewer videos keeps the finished ones; another protocol in the same folder redoes them.
    third = run_davis(davis_root, out, "features=lab", "protocol=corrflow", "task.dataset.sequences=[squares-b]")
    assert third["skipped"] == ["squares-b"]
    fourth = run_davis(davis_root, out, "features=lab", "protocol=corrflow", "protocol.propagator.radius=2")
    assert fourth["skipped"] == []


# -- config records ----------------------------------------------------------------------------

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_each_run_that_propagates_keeps_its_config_and_each_sequence_names_its_run(davis_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_davis(davis_root, out, "features=lab", "protocol=corrflow", "overlay=null", "score=false")
    (first,) = sorted((out / "runs").iterdir())
    assert OmegaConf.load(first / "config.yaml").protocol.propagator.radius == 6
    assert (out / "config.yaml").read_text() == (first / "config.yaml").read_text()
    done = {s: json.loads((out / "results" / f"{s}.done").read_text()) for s in ("squares-a", "squares-b")}
    assert {d["run"] for d in done.values()} == {f"runs/{first.name}"}
    # Nothing to redo: no new record.
    run_davis(davis_root, out, "features=lab", "protocol=corrflow", "overlay=null", "score=false")
    assert sorted((out / "runs").iterdir()) == [first]
    # Another radius in the same folder: squares-b is redone by a second run with its own record;
    # squares-a was not selected and still points to the first run's config.
    run_davis(davis_root, out, "features=lab", "protocol=corrflow", "overlay=null", "score=false",
              "protocol.propagator.radius=2", "task.dataset.sequences=[squares-b]")  # fmt: skip
    first_again, second = sorted((out / "runs").iterdir())
    assert first_again == first
    assert OmegaConf.load(first / "config.yaml").protocol.propagator.radius == 6
    assert OmegaConf.load(second / "config.yaml").protocol.propagator.radius == 2
    assert json.loads((out / "results" / "squares-a.done").read_text())["run"] == f"runs/{first.name}"
    assert json.loads((out / "results" / "squares-b.done").read_text())["run"] == f"runs/{second.name}"


@pytest.mark.parametrize("failure", ["data_root", "annotation", "checkpoint", "device"])
def test_a_failed_run_leaves_earlier_results_and_config_records_untouched(davis_root: Path, tmp_path: Path, failure: str) -> None:
    out = tmp_path / "out"
    run_davis(davis_root, out, "features=lab", "protocol=corrflow", "overlay=null")
    before = _snapshot(out)
    args = ["features=lab", "protocol=corrflow", "overlay=null", "protocol.propagator.radius=2"]  # would redo both
    root, error = davis_root, ValueError
    if failure == "data_root":
        root, error = tmp_path / "nope", Exception  # Hydra's instantiate wraps the FileNotFoundError
    elif failure == "annotation":
        bad = np.zeros((32, 48), np.uint8)
        bad[:4, :4] = 9
        write_indexed_png(davis_root / "Annotations" / "480p" / "squares-b" / "00003.png", bad)
    elif failure == "checkpoint":
        args[0], error = "features=checkpoint", Exception
        args.append(f"ckpt={tmp_path / 'gone.ckpt'}")
    else:
        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
        args.append("device=cuda")
    with pytest.raises(error):
        propagate(compose_cfg("task=davis", f"data.root={root}", f"output_dir={out}", *args))
    assert (out / "config.yaml").read_bytes() == before["config.yaml"]
    assert _snapshot(out) == before  # results, done-files, overlays, scores and runs/ records alike
    assert any(k.startswith("runs/") and k.endswith("/config.yaml") for k in before)


# -- errors ------------------------------------------------------------------------------------

def test_checkpoint_of_the_wrong_kind(davis_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(1)}}, bad)
    with pytest.raises(Exception, match=r"other\.ckpt: not a corrflow training checkpoint"):
        run_davis(davis_root, tmp_path / "out", "features=checkpoint", f"ckpt={bad}")
    with pytest.raises(Exception, match=r"needs a checkpoint: ckpt="):
        run_davis(davis_root, tmp_path / "out", "features=checkpoint")


def test_empty_split_file_through_propagate(davis_root: Path, tmp_path: Path) -> None:
    (davis_root / "ImageSets" / "2017" / "val.txt").write_text("")
    with pytest.raises(Exception, match=r"val\.txt: the split file is empty"):
        run_davis(davis_root, tmp_path / "out", "features=lab")


def test_bad_ground_truth_fails_before_propagating(davis_root: Path, tmp_path: Path) -> None:
    mask = np.zeros((32, 48), np.uint8)
    mask[:4, :4] = 9
    write_indexed_png(davis_root / "Annotations" / "480p" / "squares-a" / "00002.png", mask)
    with pytest.raises(ValueError, match=r"squares-a/00002\.png: object ids \[9\]"):
        run_davis(davis_root, tmp_path / "out", "features=lab")
    assert not (tmp_path / "out" / "results" / "squares-a.done").exists()


def test_entry_script(davis_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "propagate.py"), "task=davis", f"data.root={davis_root}", "features=lab",
         "protocol=corrflow", f"output_dir={out}", "progress=false", "score=false", f"hydra.run.dir={tmp_path / 'hydra'}"],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "squares-a" in proc.stdout
    assert (out / "results" / "squares-b.done").is_file()


def _entry(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    from tests.test_utils_cli import run_tool

    return run_tool(
        REPO / "tools" / "propagate.py", "features=lab", "protocol=corrflow", f"output_dir={tmp_path / 'out'}", "progress=false",
        f"hydra.run.dir={tmp_path / 'hydra'}", *args, env=env,
    )  # fmt: skip


def test_entry_script_missing_data_root_is_one_line(tmp_path: Path) -> None:
    from tests.test_utils_cli import assert_one_clear_line

    proc = _entry(tmp_path, "task=davis", f"data.root={tmp_path / 'nope'}")
    assert_one_clear_line(proc, rf"^error: DAVIS root not found: {re.escape(str(tmp_path / 'nope'))} ")
    assert not (tmp_path / "out").exists()
    # CORRFLOW_DEBUG=1 shows where it came from
    debug = _entry(tmp_path, "task=davis", f"data.root={tmp_path / 'nope'}", env={"CORRFLOW_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "DAVIS root not found" in debug.stderr


def test_entry_script_unexpected_mask_id_is_one_line(davis_root: Path, tmp_path: Path) -> None:
    from tests.test_utils_cli import assert_one_clear_line

    bad = np.zeros((32, 48), np.uint8)
    bad[:4, :4] = 9
    write_indexed_png(davis_root / "Annotations" / "480p" / "squares-a" / "00002.png", bad)
    proc = _entry(tmp_path, "task=davis", f"data.root={davis_root}")
    assert_one_clear_line(proc, r"^error: .*squares-a/00002\.png: object ids \[9\] are not in the first-frame annotation")
    assert not (tmp_path / "out").exists()


def make_checkpoint(path: Path) -> Path:
    """A corrflow training checkpoint holding an (untrained) CorrFlow encoder."""
    enc = corrflow_encoder()
    torch.save(
        {"state_dict": {"net.encoder." + k: v for k, v in enc.state_dict().items()}, "corrflow": encoder_payload(enc, prefix="net.encoder.")},
        path,
    )
    return path


def test_label_resize_is_in_label_propagations_fingerprint() -> None:
    """Label propagation resizes labels to the feature grid, so label_resize decides its predictions
    (segmenter methods, which work at the frame's pixels, leave it out: tests/test_propagation_osvos.py)."""
    from corrflow.propagation.run import fingerprint

    a = compose_cfg("task=davis", "protocol=crw", "features=lab")
    b = compose_cfg("task=davis", "protocol=crw", "features=lab", "protocol.label_resize=pool")
    assert a.task.targets.label_resize == "bilinear" and fingerprint(a) != fingerprint(b)
