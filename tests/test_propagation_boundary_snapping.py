"""Boundary snapping: a mask 3 pixels off a sharp synthetic edge moves onto it, a mask on it stays
as it is; the superpixels do not cross a contour; the majority rule on a hand-made case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from corrflow.propagation.boundary_snapping import contour_superpixels, grid_minima, snap_labels, snap_to_contours

H, W = 40, 64


def edge_contour(image: np.ndarray) -> np.ndarray:
    """The gradient magnitude (Sobel) of an image: a sharp edge's contour map."""
    return np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1))


@pytest.mark.parametrize("edge", [21, 30, 37])
@pytest.mark.parametrize("offset", [3, -3, 0])
def test_a_mask_off_a_vertical_edge_snaps_onto_it(edge, offset):
    image = np.zeros((H, W))
    image[:, edge:] = 1.0
    mask = np.zeros((H, W), np.int64)
    mask[:, : edge + offset] = 1
    snapped = snap_to_contours(torch.from_numpy(mask), torch.from_numpy(edge_contour(image)), n_segments=12)
    expected = np.zeros((H, W), np.int64)
    expected[:, :edge] = 1
    np.testing.assert_array_equal(snapped.numpy(), expected)  # offset 0: unchanged


@pytest.mark.parametrize("radius", [9, 12, 15])
def test_a_disc_mask_too_small_or_too_large_snaps_onto_the_disc(radius):
    yy, xx = np.mgrid[0:H, 0:W]
    disc = ((yy - 20) ** 2 + (xx - 32) ** 2 < 12**2).astype(np.int64)
    mask = ((yy - 20) ** 2 + (xx - 32) ** 2 < radius**2).astype(np.int64)
    snapped = snap_labels(mask, contour_superpixels(edge_contour(disc.astype(float)), n_segments=16))
    np.testing.assert_array_equal(snapped, disc)


def test_superpixels_do_not_cross_the_edge_and_markers_avoid_it():
    image = np.zeros((H, W))
    image[:, 30:] = 1.0
    contour = edge_contour(image)
    markers = grid_minima(contour, 12)
    assert markers.max() == len(np.unique(markers)) - 1 >= 10
    assert (contour[markers > 0] == 0).all()  # no marker on the ridge
    segments = contour_superpixels(contour, n_segments=12)
    left, right = set(np.unique(segments[:, :30])), set(np.unique(segments[:, 30:]))
    assert not left & right


def test_majority_rule_hand_made():
    segments = np.array([[1, 1, 1, 2, 2], [1, 1, 3, 2, 2]])
    ids = np.array([[0, 2, 2, 1, 0], [2, 0, 0, 0, 0]])
    # segment 1: ids {0, 2, 2, 2, 0} -> 2; segment 2: {1, 0, 0, 0} -> 0; segment 3: {0} -> 0
    np.testing.assert_array_equal(snap_labels(ids, segments), [[2, 2, 2, 0, 0], [2, 2, 0, 0, 0]])
    # a tie goes to the smaller label
    np.testing.assert_array_equal(snap_labels(np.array([[0, 1]]), np.array([[5, 5]])), [[0, 0]])
    with pytest.raises(ValueError, match="differ in size"):
        snap_labels(np.zeros((2, 2), int), np.zeros((2, 3), int))
