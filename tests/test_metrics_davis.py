"""DAVIS J / F / statistics: hand-computed cases for every rule of the official evaluation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from corrflow.metrics.davis import (
    DAVISScores,
    ObjectScores,
    boundary_f_measure,
    boundary_radius,
    davis_object_ids,
    disk,
    jaccard,
    score_davis_sequence,
    seg_to_boundary,
    temporal_statistics,
)

# ----------------------------------------------------------------------------- disk, radius


def test_disk_matches_skimage_definition():
    assert disk(0).tolist() == [[True]]
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(disk(1), cross)
    expected2 = np.array(
        [
            [0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(disk(2), expected2)
    # Gauss circle problem: lattice points with x^2 + y^2 <= r^2.
    assert disk(3).sum() == 29
    assert disk(8).shape == (17, 17) and disk(8).sum() == 197
    with pytest.raises(ValueError):
        disk(2.5)


def test_boundary_radius():
    assert boundary_radius((480, 854)) == 8  # ceil(0.008 * 979.6)
    assert boundary_radius((20, 20)) == 1
    assert boundary_radius((1080, 1920)) == 18  # ceil(0.008 * 2202.9)
    assert boundary_radius((480, 854), bound_th=3) == 3


# ----------------------------------------------------------------------------- boundaries


def test_seg_to_boundary_square_is_offset_towards_origin():
    seg = np.zeros((6, 6), dtype=np.uint8)
    seg[2:4, 2:4] = 1
    expected = np.zeros((6, 6), dtype=bool)
    expected[1, 1:4] = True
    expected[2, [1, 3]] = True
    expected[3, 1:4] = True
    np.testing.assert_array_equal(seg_to_boundary(seg), expected)


def test_seg_to_boundary_image_border_is_no_boundary():
    assert not seg_to_boundary(np.ones((5, 7))).any()
    assert not seg_to_boundary(np.zeros((5, 7))).any()
    right_half = np.zeros((4, 6), dtype=bool)
    right_half[:, 3:] = True
    expected = np.zeros((4, 6), dtype=bool)
    expected[:, 2] = True  # the column left of the edge; nothing along the image border
    np.testing.assert_array_equal(seg_to_boundary(right_half), expected)
    bottom_right = np.zeros((4, 4), dtype=bool)
    bottom_right[3, 3] = True
    expected = np.zeros((4, 4), dtype=bool)
    expected[2, 2] = expected[2, 3] = expected[3, 2] = True
    np.testing.assert_array_equal(seg_to_boundary(bottom_right), expected)


# ----------------------------------------------------------------------------- J


def test_jaccard_hand_computed_and_empty_union():
    gt = np.zeros((4, 4), dtype=bool)
    gt[0, 0:4] = True  # 4 px
    pred = np.zeros((4, 4), dtype=bool)
    pred[0, 2:4] = True
    pred[1, 2:4] = True  # 4 px, 2 shared: 2 / 6
    assert jaccard(gt, pred) == pytest.approx(2 / 6)
    assert jaccard(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert jaccard(gt, np.zeros_like(gt)) == 0.0
    batch = jaccard(np.stack([gt, np.zeros_like(gt)]), np.stack([pred, np.zeros_like(gt)]))
    assert batch.shape == (2,)
    np.testing.assert_allclose(batch, [2 / 6, 1.0])


# ----------------------------------------------------------------------------- F


def _square(shape, top, left, size):
    m = np.zeros(shape, dtype=bool)
    m[top : top + size, left : left + size] = True
    return m


def test_f_measure_empty_cases():
    empty = np.zeros((20, 20), dtype=bool)
    sq = _square((20, 20), 5, 5, 5)
    assert boundary_f_measure(empty, empty) == 1.0  # no boundary anywhere: P = R = 1
    assert boundary_f_measure(sq, empty) == 0.0  # P = 1, R = 0
    assert boundary_f_measure(empty, sq) == 0.0  # P = 0, R = 1
    assert boundary_f_measure(sq, sq) == 1.0


def test_f_measure_tiny_square_hand_computed():
    # 20x20 image: radius ceil(0.008 * 28.3) = 1, a 3x3 cross. The 5x5 square's boundary is the
    # 20-pixel ring of rows/cols 4..9. Shifted right by 3 px, 10 of the 20 predicted ring pixels
    # touch the ground-truth ring (top 4, bottom 4, left 2, right 0): P = R = 0.5, F = 0.5.
    gt = _square((20, 20), 5, 5, 5)
    assert seg_to_boundary(gt).sum() == 20
    assert boundary_f_measure(gt, _square((20, 20), 5, 8, 5)) == pytest.approx(0.5)
    assert boundary_f_measure(gt, _square((20, 20), 5, 6, 5)) == pytest.approx(1.0)  # within 1 px


def test_f_measure_tolerance_is_8px_at_480p():
    # A 200x200 square has an 800-pixel boundary ring (rows 99..299, cols 199..399). Shifted down
    # by 8 px every ring pixel is within 8 px of the other ring. Shifted by 9, of the predicted
    # ring only the two side columns (199 px each) and 9 + 9 pixels at the ends of the top row
    # are within 8 px of the ground-truth ring: P = R = 416 / 800 = 0.52.
    gt = _square((480, 854), 100, 200, 200)
    assert seg_to_boundary(gt).sum() == 800
    assert boundary_f_measure(gt, np.roll(gt, 8, axis=0)) == pytest.approx(1.0)
    assert boundary_f_measure(gt, np.roll(gt, 9, axis=0)) == pytest.approx(0.52)


def test_f_measure_equals_disk_dilation_reference():
    """Our distance-transform dilation equals a literal binary dilation by disk(r)."""

    def reference_f(gt, pred, radius):
        gb, pb = seg_to_boundary(gt), seg_to_boundary(pred)
        gd = ndimage.binary_dilation(gb, structure=disk(radius))
        pd = ndimage.binary_dilation(pb, structure=disk(radius))
        p, r = (pb & gd).sum() / pb.sum(), (gb & pd).sum() / gb.sum()
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    rng = np.random.default_rng(0)
    for bound_th in (2, 3, 5):
        gt = ndimage.gaussian_filter(rng.random((3, 60, 90)), (0, 3, 3)) > 0.5
        pred = ndimage.gaussian_filter(rng.random((3, 60, 90)), (0, 3, 3)) > 0.5
        ours = boundary_f_measure(gt, pred, bound_th=bound_th)
        assert ours.shape == (3,)
        ref = [reference_f(g, p, bound_th) for g, p in zip(gt, pred)]
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
        assert 0.0 < ours.min() < 1.0


# ----------------------------------------------------------------------------- statistics


def test_temporal_statistics_hand_series():
    # N = 8: edges round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7]; first bin v[0:3], last v[5:8].
    v = np.array([1.0, 1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.3])
    mean, recall, decay = temporal_statistics(v)
    assert mean == pytest.approx(4.3 / 8)
    assert recall == pytest.approx(3 / 8)  # 0.5 is not > 0.5
    assert decay == pytest.approx(1.0 - 0.1)


def test_temporal_statistics_single_frame_and_empty():
    assert temporal_statistics(np.array([0.7])) == pytest.approx((0.7, 1.0, 0.0))
    with pytest.raises(ValueError):
        temporal_statistics(np.array([]))


@pytest.mark.parametrize("n", [257, 300, 400])
def test_decay_beyond_256_frames(n):
    """The official code casts the bin edges to uint8: for 257-341 scored frames the last bin is
    empty (decay NaN), beyond that it covers the wrong frames. Ours uses the true edges."""
    v = np.zeros(n)
    quarter = n // 4
    v[:quarter] = 1.0
    edges = np.round(np.linspace(1, n, 5) + 1e-10).astype(np.int64) - 1
    assert edges[-1] == n - 1 and edges[-1] > 255  # the edge uint8 would wrap
    expected = v[edges[0] : edges[1] + 1].mean() - v[edges[3] : edges[4] + 1].mean()
    _, _, decay = temporal_statistics(v)
    assert np.isfinite(decay)
    assert decay == pytest.approx(expected)
    assert decay > 0.9
    # The official uint8 edges select an empty last bin (NaN) or frames from the middle.
    w = edges.astype(np.uint8).astype(np.int64)
    last = v[w[3] : w[4] + 1]
    official = np.nan if last.size == 0 else v[w[0] : w[1] + 1].mean() - last.mean()
    assert not official == pytest.approx(decay)


# ----------------------------------------------------------------------------- sequence rules


def _frames(t, h=8, w=8):
    return np.zeros((t, h, w), dtype=np.uint8)


def test_first_and_last_frames_not_scored():
    gt = _frames(5)
    gt[:, 2:5, 2:5] = 1
    pred = gt.copy()
    pred[0] = 0  # wrong first and last frames: ignored
    pred[-1, 0:2, 0:2] = 1
    (obj,) = score_davis_sequence(gt, pred)
    assert (obj.j_mean, obj.f_mean) == (1.0, 1.0)
    pred[2] = 0  # a scored frame
    (obj,) = score_davis_sequence(gt, pred, keep_frames=True)
    assert obj.j_frames == (1.0, 0.0, 1.0)
    assert obj.j_mean == pytest.approx(2 / 3)
    # the scored frames alone are accepted too
    (obj2,) = score_davis_sequence(gt, pred[1:-1], keep_frames=True)
    assert obj2.j_frames == obj.j_frames


def test_void_counts_as_background():
    gt = _frames(3)
    gt[:, 1, 0:4] = 1  # 4 px object
    gt[:, 5, 0:2] = 255  # 2 px void
    pred = np.where(gt == 255, 1, gt)  # object predicted on the void pixels too
    (obj,) = score_davis_sequence(gt, pred, keep_frames=True)
    assert obj.j_frames == (pytest.approx(4 / 6),)
    (obj,) = score_davis_sequence(gt, np.where(gt == 255, 0, gt))
    assert obj.j_mean == 1.0


def test_missing_predicted_id_is_an_empty_mask():
    gt = _frames(4)
    gt[:, 0:2, 0:2] = 1
    gt[:, 5:7, 5:7] = 2
    pred = np.where(gt == 2, 0, gt)
    one, two = score_davis_sequence(gt, pred)
    assert (one.object_id, one.j_mean, one.f_mean) == (1, 1.0, 1.0)
    assert (two.object_id, two.j_mean, two.f_mean, two.j_recall) == (2, 0.0, 0.0, 0.0)


def test_extra_ids_are_an_error():
    gt = _frames(3)
    gt[:, 0:2, 0:2] = 1
    pred = gt.copy()
    pred[1, 6, 6] = 2
    with pytest.raises(ValueError, match=r"ids \[2\]"):
        score_davis_sequence(gt, pred, sequence="seq")
    pred[1, 6, 6] = 255
    with pytest.raises(ValueError, match="255"):
        score_davis_sequence(gt, pred)


def test_objects_are_ids_of_first_frame_up_to_max():
    first = np.array([[0, 1], [3, 255]], dtype=np.uint8)
    assert davis_object_ids(first) == [1, 2, 3]  # official: 1..max, void ignored
    assert davis_object_ids(np.array([[0, 255]])) == []
    assert davis_object_ids(np.array([[0, 255]]), single_object=True) == [1]
    gt = _frames(3)
    gt[:, 0, 0] = 1
    gt[1:, 4, 4] = 2  # id 2 appears only after the first frame: not an object
    pred = gt.copy()
    pred[pred == 2] = 0
    assert [o.object_id for o in score_davis_sequence(gt, pred)] == [1]
    with pytest.raises(ValueError, match="ids \\[2\\]"):
        score_davis_sequence(gt, gt)
    with pytest.raises(ValueError, match="no object"):
        score_davis_sequence(_frames(3), _frames(3))


def test_single_object_mode_uses_any_nonzero_id():
    gt = _frames(3)
    gt[:, 2:5, 2:5] = 255  # DAVIS-2016 masks may be 0/255
    pred = (gt > 0).astype(np.uint8)
    (obj,) = score_davis_sequence(gt, pred, single_object=True)
    assert (obj.object_id, obj.j_mean, obj.f_mean) == (1, 1.0, 1.0)


def test_too_few_frames_and_shape_errors():
    with pytest.raises(ValueError, match="T >= 3"):
        score_davis_sequence(_frames(2), _frames(2))
    with pytest.raises(ValueError, match="shape"):
        score_davis_sequence(_frames(4), _frames(4, 8, 9))


def test_jf_of_ground_truth_against_itself_is_one():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 3, size=(6, 16, 24)).astype(np.uint8)
    gt[:, 0, 0] = 2
    scores = DAVISScores.from_objects(score_davis_sequence(gt, gt, sequence="s"))
    assert scores.jf_mean == 1.0
    assert (scores.j_recall, scores.f_recall, scores.j_decay, scores.f_decay) == (1.0, 1.0, 0.0, 0.0)


def test_global_aggregation_is_mean_over_objects():
    a = ObjectScores("a", 1, 1.0, 1.0, 0.0, 0.5, 0.0, 0.2)
    b = ObjectScores("b", 1, 0.5, 0.0, 0.4, 0.3, 0.0, 0.0)
    c = ObjectScores("b", 2, 0.0, 0.0, 0.2, 0.1, 0.0, 0.1)
    s = DAVISScores.from_objects([a, b, c])
    assert s.j_mean == pytest.approx(0.5)
    assert s.f_mean == pytest.approx(0.3)
    assert s.jf_mean == pytest.approx(0.4)
    assert s.j_recall == pytest.approx(1 / 3)
    assert s.j_decay == pytest.approx(0.2)
    assert s.f_decay == pytest.approx(0.1)
    assert list(s.as_dict()) == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    assert c.name == "b_2"
    with pytest.raises(ValueError):
        DAVISScores.from_objects([])
