"""PCK, JHMDB protocol (CRW eval_pck.py): hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corrflow.data.keypoints.videos import query_frame_index
from corrflow.metrics.pck import (
    normalized_keypoint_distances,
    pck,
    pck_from_distances,
    pck_per_keypoint,
)

# Frame 1 of the hand case: keypoints (0, 0), (30, 40), (0, 40): box diagonal 50, scale 0.6 * 50 = 30.
GT_FRAME = np.array([[0.0, 0.0], [30.0, 40.0], [0.0, 40.0]])


def _hand_case():
    gt = np.stack([GT_FRAME, GT_FRAME])  # (T=2, K=3, 2)
    visible = np.ones((2, 3), dtype=bool)
    pred = gt.copy()
    pred[0] += 100.0  # the query frame is not scored
    pred[1, 0] += [3.0, 0.0]  # 3 px = 0.1 * 30: correct at 0.1 (<=)
    pred[1, 1] += [0.0, 4.0]  # 4 px: wrong at 0.1, correct at 0.2 (6 px)
    return pred, gt, visible


def test_pck_of_ground_truth_is_one():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, size=(5, 15, 2))
    visible = rng.random((5, 15)) < 0.8
    visible[0] = True
    assert pck(gt, gt, visible, alpha=0.1) == 1.0
    assert pck(gt, gt, visible, alpha=(0.1, 0.2)) == {0.1: 1.0, 0.2: 1.0}


def test_pck_hand_computed():
    pred, gt, visible = _hand_case()
    dist = normalized_keypoint_distances(pred, gt, visible)
    assert dist.shape == (2, 3)
    assert np.isnan(dist[0]).all()  # first frame not scored
    np.testing.assert_allclose(dist[1], [0.1, 4 / 30, 0.0])
    assert pck(pred, gt, visible, alpha=0.1) == pytest.approx(2 / 3)
    assert pck(pred, gt, visible, alpha=0.2) == pytest.approx(1.0)
    assert pck(pred, gt, visible, alpha=0.05) == pytest.approx(1 / 3)


def test_invisible_keypoints_are_not_scored_nor_in_the_box():
    pred, gt, visible = _hand_case()
    gt = np.concatenate([gt, [[[500.0, 500.0]], [[500.0, 500.0]]]], axis=1)  # a 4th, far away
    pred = np.concatenate([pred, [[[0.0, 0.0]], [[0.0, 0.0]]]], axis=1)  # badly predicted
    visible = np.concatenate([visible, [[True], [False]]], axis=1)  # invisible in frame 1
    dist = normalized_keypoint_distances(pred, gt, visible)
    np.testing.assert_allclose(dist[1, :3], [0.1, 4 / 30, 0.0])  # box unchanged
    assert np.isnan(dist[1, 3])
    assert pck(pred, gt, visible, alpha=0.1) == pytest.approx(2 / 3)


def test_keypoint_invisible_in_query_frame_is_never_scored():
    pred, gt, visible = _hand_case()
    visible[0, 2] = False
    dist = normalized_keypoint_distances(pred, gt, visible)
    assert np.isnan(dist[1, 2])
    assert not np.isnan(dist[1, 0])


def test_query_frame_defaults_to_first_visible_frame():
    pred, gt, visible = _hand_case()
    gt3 = np.concatenate([np.full((1, 3, 2), np.nan), gt])  # an unannotated frame 0
    pred3 = np.concatenate([np.zeros((1, 3, 2)), pred])
    vis3 = np.concatenate([np.zeros((1, 3), dtype=bool), visible])
    assert query_frame_index(vis3) == 1
    assert pck(pred3, gt3, vis3, alpha=0.1) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        query_frame_index(np.zeros((2, 3), dtype=bool))


def test_non_finite_predictions_and_zero_scale_are_misses():
    pred, gt, visible = _hand_case()
    pred[1, 2] = np.nan
    dist = normalized_keypoint_distances(pred, gt, visible)
    assert dist[1, 2] == np.inf
    assert pck(pred, gt, visible, alpha=0.2) == pytest.approx(2 / 3)
    # one scored keypoint: zero box, so even a perfect prediction is wrong (CRW divides by 0)
    visible1 = visible.copy()
    visible1[:, 1:] = False
    assert pck(gt, gt, visible1, alpha=0.1) == 0.0


def test_dataset_pck_pools_per_keypoint_then_averages_keypoints():
    # keypoint 0: 1 of 1 correct in sequence A, 0 of 3 in B -> 1/4; keypoint 1: 2 of 2 -> 1.
    a = np.array([[0.05, 0.05], [np.nan, 0.01]])
    b = np.array([[0.5, np.nan], [0.5, np.nan], [0.5, np.nan]])
    np.testing.assert_allclose(pck_per_keypoint([a, b], alpha=0.1), [0.25, 1.0])
    assert pck_from_distances([a, b], alpha=0.1) == pytest.approx(0.625)
    assert np.isnan(pck_from_distances(np.full((2, 2), np.nan), alpha=0.1))


def test_torch_inputs_and_shape_errors():
    pred, gt, visible = _hand_case()
    assert pck(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(visible), alpha=0.1) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="pred"):
        pck(pred[:, :2], gt, visible)
    with pytest.raises(ValueError, match="visible"):
        pck(pred, gt, visible[:, :2])
    with pytest.raises(ValueError, match="gt"):
        pck(pred[..., 0], gt[..., 0], visible)
