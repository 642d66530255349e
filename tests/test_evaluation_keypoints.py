"""evaluate_keypoints: predictions as .npz files, PCK per sequence and pooled, CSV."""

from __future__ import annotations

import numpy as np
import pytest

from corrflow.evaluation import KeypointScores, evaluate_keypoints

GT_FRAME = np.array([[0.0, 0.0], [30.0, 40.0], [0.0, 40.0]])  # box diagonal 50 -> scale 30


def _annotations():
    coords = np.stack([GT_FRAME] * 3).astype(np.float32)  # (T=3, K=3, 2)
    visible = np.ones((3, 3), dtype=bool)
    return {"a": (coords, visible), "act/b": (coords[:2].copy(), visible[:2].copy())}


def _save(path, keypoints):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, keypoints=keypoints)


def test_ground_truth_scores_one(tmp_path):
    ann = _annotations()
    for seq, (coords, _) in ann.items():
        _save(tmp_path / f"{seq}.npz", coords)
    scores = evaluate_keypoints(tmp_path, ann)
    assert isinstance(scores, KeypointScores)
    assert scores.pck == {0.1: 1.0, 0.2: 1.0}
    assert scores.as_dict() == {"pck@0.1": 1.0, "pck@0.2": 1.0}
    assert (tmp_path / "pck_results.csv").read_text() == (
        "Sequence,PCK@0.1,PCK@0.2\na,1.0000,1.0000\nact/b,1.0000,1.0000\nmean,1.0000,1.0000\n"
    )


def test_hand_computed_pooled_pck(tmp_path):
    ann = _annotations()
    a = np.stack([GT_FRAME] * 3)
    a[1, 0] += [4.0, 0.0]  # keypoint 0 wrong at 0.1 (4 px > 3 px) in frame 1, right in frame 2
    b = np.stack([GT_FRAME] * 4)  # more predicted frames than annotated: extra ones ignored
    b[1, 0] += [0.0, 5.0]  # keypoint 0 wrong at 0.1 in b's only scored frame
    b[3] = 1e6
    _save(tmp_path / "a.npz", a)
    _save(tmp_path / "act" / "b.npz", b)
    scores = evaluate_keypoints(tmp_path, ann, thresholds=(0.1,), output_dir=tmp_path / "out")
    # sequence a: keypoint 0 1/2, others 1 -> (0.5 + 1 + 1) / 3; b: (0 + 1 + 1) / 3
    assert scores.per_sequence["a"][0.1] == pytest.approx(2.5 / 3)
    assert scores.per_sequence["act/b"][0.1] == pytest.approx(2 / 3)
    # pooled: keypoint 0 is right in 1 of 3 scored frames -> (1/3 + 1 + 1) / 3
    assert scores.per_keypoint[0.1] == pytest.approx((1 / 3, 1.0, 1.0))
    assert scores.pck[0.1] == pytest.approx((1 / 3 + 2) / 3)
    lines = (tmp_path / "out" / "pck_results.csv").read_text().splitlines()
    assert lines == ["Sequence,PCK@0.1", "a,0.8333", "act/b,0.6667", "mean,0.7778"]


def test_prediction_errors_name_the_file(tmp_path):
    ann = _annotations()
    coords = ann["a"][0]
    _save(tmp_path / "act" / "b.npz", ann["act/b"][0])
    with pytest.raises(FileNotFoundError, match=r"a\.npz"):
        evaluate_keypoints(tmp_path, ann)
    _save(tmp_path / "a.npz", coords[:, :2])
    with pytest.raises(ValueError, match=r"a\.npz.*\(T, 3, 2\)"):
        evaluate_keypoints(tmp_path, ann)
    _save(tmp_path / "a.npz", coords[:2])
    with pytest.raises(ValueError, match=r"a\.npz.*2 frames"):
        evaluate_keypoints(tmp_path, ann)
    np.savez(tmp_path / "a.npz", points=coords)
    with pytest.raises(ValueError, match=r"a\.npz.*'keypoints'"):
        evaluate_keypoints(tmp_path, ann)
    (tmp_path / "a.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"a\.npz"):
        evaluate_keypoints(tmp_path, ann)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        evaluate_keypoints(tmp_path / "nowhere", ann)
    with pytest.raises(ValueError):
        evaluate_keypoints(tmp_path, {})
