"""evaluate_davis on tiny DAVIS trees built in tmp_path, and once on the real dev split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corrflow.evaluation import DAVISScores, evaluate_davis
from corrflow.metrics.davis import score_davis_sequence
from corrflow.utils.io import write_indexed_png
from tests.helpers.shared_data import shared_path, skip_if_missing

REAL_DAVIS = shared_path("davis2016-dev")


def make_sequence(t=5, h=12, w=16):
    """Two square objects moving right by one pixel a frame: (T, H, W) uint8 ids."""
    gt = np.zeros((t, h, w), dtype=np.uint8)
    for i in range(t):
        gt[i, 2:6, 1 + i : 5 + i] = 1
        gt[i, 7:11, 8:12] = 2
    return gt


def write_tree(root: Path, sequences: dict[str, np.ndarray], *, split="val", year="2017") -> Path:
    for name, frames in sequences.items():
        for i, frame in enumerate(frames):
            write_indexed_png(root / "Annotations" / "480p" / name / f"{i:05d}.png", frame)
    split_file = root / "ImageSets" / year / f"{split}.txt"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    split_file.write_text("".join(f"{n}\n" for n in sequences))
    return root


def write_results(root: Path, sequences: dict[str, np.ndarray]) -> Path:
    for name, frames in sequences.items():
        for i, frame in enumerate(frames):
            write_indexed_png(root / name / f"{i:05d}.png", frame)
    return root


@pytest.fixture
def tree(tmp_path):
    gt = {"alpha": make_sequence(), "beta": make_sequence(t=4)}
    davis = write_tree(tmp_path / "davis", gt)
    results = write_results(tmp_path / "results", gt)
    return davis, results, gt


def test_ground_truth_scores_one_and_csvs_are_official(tree):
    davis, results, _ = tree
    scores = evaluate_davis(results, davis, split="val", progress=False)
    assert isinstance(scores, DAVISScores)
    assert scores.jf_mean == 1.0
    assert [o.name for o in scores.per_object] == ["alpha_1", "alpha_2", "beta_1", "beta_2"]
    assert (results / "global_results-val.csv").read_text() == (
        "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n"
        "1.000,1.000,1.000,0.000,1.000,1.000,0.000\n"
    )
    assert (results / "per-sequence_results-val.csv").read_text() == (
        "Sequence,J-Mean,F-Mean\nalpha_1,1.000,1.000\nalpha_2,1.000,1.000\nbeta_1,1.000,1.000\nbeta_2,1.000,1.000\n"
    )
    assert not list(results.glob(".*.tmp"))


def test_hand_computed_scores_in_csv(tmp_path):
    gt = make_sequence(t=4)
    davis = write_tree(tmp_path / "davis", {"s": gt})
    pred = gt.copy()
    pred[1][pred[1] == 2] = 0  # object 2 missing in scored frame 1: J = F = 0 there
    pred[2, 2:6, :] = 0  # object 1 missing in scored frame 2
    pred[0] = 0  # first and last frames are not scored
    pred[3] = 0
    results = write_results(tmp_path / "res", {"s": pred})
    scores = evaluate_davis(results, davis, sequences=["s"], output_dir=tmp_path / "out", progress=False)
    one, two = scores.per_object
    assert (one.j_mean, one.f_mean, one.j_recall) == (0.5, 0.5, 0.5)
    assert (two.j_mean, two.f_mean) == (0.5, 0.5)
    # two scored frames: edges round(linspace(1, 2, 5)) - 1 = [0, 0, 1, 1, 1], so the first bin
    # is v[0:1] and the last v[1:2]: object 1 scores (1, 0), object 2 (0, 1)
    assert one.j_decay == pytest.approx(1.0 - 0.0)
    assert two.j_decay == pytest.approx(0.0 - 1.0)
    assert (tmp_path / "out" / "global_results-custom.csv").read_text().splitlines()[1] == (
        "0.500,0.500,0.500,0.000,0.500,0.500,0.000"
    )
    assert (tmp_path / "out" / "per-sequence_results-custom.csv").read_text().splitlines()[1:] == [
        "s_1,0.500,0.500",
        "s_2,0.500,0.500",
    ]


def test_first_and_last_result_frames_are_not_needed(tree):
    davis, results, _ = tree
    (results / "alpha" / "00000.png").unlink()
    (results / "alpha" / "00004.png").unlink()
    assert evaluate_davis(results, davis, split="val", progress=False).jf_mean == 1.0


def test_missing_result_frame_names_the_file(tree):
    davis, results, _ = tree
    (results / "alpha" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"alpha/00002\.png"):
        evaluate_davis(results, davis, split="val", progress=False)


def test_result_of_another_size_names_the_file(tree):
    davis, results, _ = tree
    write_indexed_png(results / "beta" / "00001.png", np.zeros((12, 15), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"beta/00001\.png.*15x12"):
        evaluate_davis(results, davis, split="val", progress=False)


def test_extra_ids_name_the_file(tree):
    davis, results, gt = tree
    frame = gt["beta"][2].copy()
    frame[0, 0] = 3
    write_indexed_png(results / "beta" / "00002.png", frame)
    with pytest.raises(ValueError, match=r"beta/00002\.png.*\[3\]"):
        evaluate_davis(results, davis, split="val", progress=False)


def test_non_palette_result_names_the_file(tree):
    davis, results, _ = tree
    Image.new("RGB", (16, 12)).save(results / "alpha" / "00001.png")
    with pytest.raises(ValueError, match=r"alpha/00001\.png.*palette"):
        evaluate_davis(results, davis, split="val", progress=False)


def test_split_and_sequence_errors(tree, tmp_path):
    davis, results, _ = tree
    (davis / "ImageSets" / "2017" / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty\.txt"):
        evaluate_davis(results, davis, split="empty", progress=False)
    with pytest.raises(FileNotFoundError, match=r"test-dev\.txt"):
        evaluate_davis(results, davis, split="test-dev", progress=False)
    with pytest.raises(FileNotFoundError, match="gamma"):
        evaluate_davis(results, davis, sequences=["gamma"], progress=False)
    with pytest.raises(ValueError, match="split"):
        evaluate_davis(results, davis, progress=False)
    shutil.rmtree(results / "beta")
    with pytest.raises(FileNotFoundError, match=r"results of sequence 'beta'"):
        evaluate_davis(results, davis, split="val", progress=False)


def test_failed_evaluation_keeps_previous_csvs(tree):
    davis, results, _ = tree
    evaluate_davis(results, davis, split="val", progress=False)
    before = (results / "global_results-val.csv").read_text()
    (results / "beta" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError):
        evaluate_davis(results, davis, split="val", progress=False)
    assert (results / "global_results-val.csv").read_text() == before


def test_davis2016_single_object(tmp_path):
    gt = (make_sequence() == 1).astype(np.uint8) * 255  # DAVIS-2016 stores 0/255
    davis = write_tree(tmp_path / "davis", {"s": gt}, split="val", year="2016")
    results = write_results(tmp_path / "res", {"s": (gt > 0).astype(np.uint8)})
    scores = evaluate_davis(results, davis, split="val", year="2016", progress=False)
    assert [o.name for o in scores.per_object] == ["s_1"]
    assert scores.jf_mean == 1.0
    with pytest.raises(ValueError, match="year"):
        evaluate_davis(results, davis, split="val", year="2018", progress=False)


def _write_grayscale(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask != 0, 255, 0).astype(np.uint8)).save(path)


def write_release_2016(root: Path, sequences: dict[str, np.ndarray], *, split="val") -> Path:
    """The official DAVIS-2016 release: grayscale masks, object = 255, ImageSets/480p/<split>.txt
    of '<frame> <annotation>' lines."""
    lines = []
    for name, frames in sequences.items():
        for i, frame in enumerate(frames):
            _write_grayscale(root / "Annotations" / "480p" / name / f"{i:05d}.png", frame)
            lines.append(f"/JPEGImages/480p/{name}/{i:05d}.jpg /Annotations/480p/{name}/{i:05d}.png\n")
    (root / "ImageSets" / "480p").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "480p" / f"{split}.txt").write_text("".join(lines))
    return root


def _imperfect(gt: np.ndarray) -> np.ndarray:
    """Predictions that score strictly between 0 and 1: shifted one pixel down, one frame emptied."""
    pred = np.roll(gt, 1, axis=1)
    pred[2] = 0
    return pred


def test_davis2016_release_scores_as_its_palette_version(tmp_path):
    """Grayscale 0/255 ground truth and results (the 2016 release) score exactly as the palette
    0/1 version of the same masks, and as the metric on the binary masks directly."""
    binary = {"alpha": (make_sequence() == 1).astype(np.uint8), "beta": (make_sequence(t=6) == 2).astype(np.uint8)}
    preds = {k: _imperfect(v) for k, v in binary.items()}
    release = write_release_2016(tmp_path / "release", binary)
    res_gray = tmp_path / "res_gray"
    for name, frames in preds.items():
        for i, frame in enumerate(frames):
            _write_grayscale(res_gray / name / f"{i:05d}.png", frame)
    palette = write_tree(tmp_path / "palette", binary, year="2016")
    res_palette = write_results(tmp_path / "res_palette", preds)

    a = evaluate_davis(res_gray, release, split="val", year="2016", output_dir=tmp_path / "a", progress=False)
    b = evaluate_davis(res_palette, palette, split="val", year="2016", output_dir=tmp_path / "b", progress=False)
    assert 0.2 < a.jf_mean < 0.95
    assert a == b
    for name in ("global_results-val.csv", "per-sequence_results-val.csv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    reference = [o for n in binary for o in score_davis_sequence(binary[n], preds[n], sequence=n)]
    assert list(a.per_object) == reference


def test_davis2016_rule_on_a_davis2017_folder_is_the_union_of_ids(tmp_path):
    """The 2016 split of a DAVIS-2017 folder: every non-zero id (void too) is the one object."""
    gt = make_sequence()
    gt[:, 0, :3] = 255
    pred = _imperfect(gt)
    pred[pred == 255] = 0
    davis = write_tree(tmp_path / "davis", {"s": gt}, year="2016")
    results = write_results(tmp_path / "res", {"s": pred})
    scores = evaluate_davis(results, davis, split="val", year="2016", progress=False)
    assert [o.name for o in scores.per_object] == ["s_1"]
    (expected,) = score_davis_sequence((gt != 0).astype(np.uint8), (pred != 0).astype(np.uint8), sequence="s")
    assert scores.per_object[0] == expected
    # the rule is an explicit option: the same folder under the DAVIS-2017 rule has two objects
    two = evaluate_davis(results, davis, split="val", year="2016", single_object=False, progress=False)
    assert [o.name for o in two.per_object] == ["s_1", "s_2"]


def test_davis2017_rule_on_the_grayscale_release_says_what_to_use(tmp_path):
    gt = (make_sequence() == 1).astype(np.uint8)
    release = write_release_2016(tmp_path / "release", {"s": gt})
    results = write_results(tmp_path / "res", {"s": gt})
    with pytest.raises(ValueError, match=r"s/00000\.png: .*no object \(only void, 255, .*year 2016"):
        evaluate_davis(results, release, split="val", year="2016", single_object=False, progress=False)


def test_progress_prints_the_tables(tree, capsys):
    davis, results, _ = tree
    evaluate_davis(results, davis, split="val", progress=True)
    out = capsys.readouterr().out
    assert "Global results for val" in out
    assert "beta_2" in out


@pytest.mark.slow
@skip_if_missing(REAL_DAVIS / "Annotations", what="shared DAVIS-2016 dev data")
def test_real_davis2016_ground_truth_against_itself(tmp_path):
    scores = evaluate_davis(
        REAL_DAVIS / "Annotations" / "480p", REAL_DAVIS, split="dev", year="2016", output_dir=tmp_path, progress=False
    )
    assert len(scores.per_object) == 10
    assert scores.jf_mean == 1.0
    assert (tmp_path / "global_results-dev.csv").read_text().splitlines()[1] == "1.000,1.000,1.000,0.000,1.000,1.000,0.000"
