"""Label maps on the feature grid: masks and keypoints in and out."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from corrflow.propagation.labels import (
    harden_heatmaps,
    heatmaps_to_keypoints,
    keypoints_to_heatmaps,
    labels_to_ids,
    masks_to_onehot,
    pool_labels,
    resize_labels,
    upsample_labels,
)
from corrflow.utils.grid import feature_grid


def test_onehot_pool_upsample_round_trip_on_cell_aligned_masks() -> None:
    mask = torch.zeros(13, 18, dtype=torch.int64)  # not multiples of the stride
    mask[4:8, 4:12] = 3
    mask[8:12, 0:4] = 5
    mask[0:2, 0:2] = 255  # void counts as background
    onehot = masks_to_onehot(mask, [3, 5])
    assert onehot.shape == (3, 13, 18) and torch.all(onehot.sum(0) == 1)
    assert onehot[0, 0, 0] == 1
    pooled = pool_labels(onehot, 4)
    assert pooled.shape == (3, *feature_grid((13, 18), 4)) == (3, 4, 5)
    back = labels_to_ids(upsample_labels(pooled, (13, 18), 4), [3, 5])
    assert back.shape == (13, 18)
    assert torch.equal(back[5:7, 5:11], torch.full((2, 6), 3)) and torch.equal(back[9:11, 1:3], torch.full((2, 2), 5))
    assert back[0, 0] == 0


def test_bilinear_resize_samples_two_pixels_at_each_cell_centre() -> None:
    """CRW's resize of a one-hot mask to the grid: cell j of stride 4 samples pixels 4j+1 and 4j+2
    (centre 4j+1.5), where pooling takes the share of pixels 4j..4j+3. An object from column 3 on
    is absent from cell 0 by resizing, a quarter of it by pooling."""
    mask = torch.zeros(8, 8, dtype=torch.int64)
    mask[:, 3:] = 1
    onehot = masks_to_onehot(mask, [1])
    resized, pooled = resize_labels(onehot, (2, 2)), pool_labels(onehot, 4)
    assert resized.shape == pooled.shape == (2, 2, 2)
    assert resized[1, :, 0].tolist() == [0.0, 0.0] and resized[1, :, 1].tolist() == [1.0, 1.0]
    assert pooled[1, :, 0].tolist() == [0.25, 0.25]
    # and back to the frame size: pixel x reads the grid at x / 4 - 0.375, clamped to [0, 1]
    back = resize_labels(resized, (8, 8))[1, 0]
    assert back.tolist() == pytest.approx([0.0, 0.0, 0.125, 0.375, 0.625, 0.875, 1.0, 1.0])


@pytest.mark.parametrize("stride", [4, 8])
def test_keypoint_heatmaps_decode_back_to_their_position(stride: int) -> None:
    coords = torch.tensor([[10.0, 7.0], [33.5, 20.0], [3.0, 30.0]])
    visible = torch.tensor([True, True, False])
    grid = feature_grid((40, 48), stride)
    maps = keypoints_to_heatmaps(coords, visible, grid=grid, stride=stride, sigma=0.5)
    assert maps.shape == (4, *grid)
    assert maps[3].sum() == 0  # an invisible keypoint gives an empty map
    torch.testing.assert_close(maps[0], 1.0 - maps[1:].sum(0).clamp(max=1.0))
    decoded, found = heatmaps_to_keypoints(maps[1:], stride=stride, topk=3)
    assert found.tolist() == [True, True, False]
    assert decoded.shape == (3, 2) and math.isnan(decoded[2, 0])
    # Top-3 of a sigma-0.5 Gaussian: within a third of a cell of the truth.
    assert torch.all((decoded[:2] - coords[:2]).abs() <= stride / 3)


def test_keypoint_decoding_is_the_value_weighted_mean_of_the_top_3_cells() -> None:
    maps = torch.zeros(1, 4, 6)
    maps[0, 1, 2], maps[0, 1, 3], maps[0, 2, 2], maps[0, 3, 5] = 0.6, 0.3, 0.1, 0.05
    (xy,), _ = heatmaps_to_keypoints(maps, stride=1, topk=3)
    torch.testing.assert_close(xy, torch.tensor([2 * 0.6 + 3 * 0.3 + 2 * 0.1, 1 * 0.6 + 1 * 0.3 + 2 * 0.1]))


def test_harden_heatmaps_keeps_each_keypoint_at_its_peak() -> None:
    maps = keypoints_to_heatmaps(
        torch.tensor([[9.5, 9.5], [22.0, 5.0], [0.0, 0.0]]), torch.tensor([True, True, False]), grid=(5, 7), stride=4
    )
    soft = maps * 0.3  # propagated heat is weak: an arg-max over channels would pick the background
    soft[0] = 1.0 - soft[1:].sum(0)
    hard = harden_heatmaps(soft[None])[0]
    assert hard.shape == maps.shape
    assert hard[1, 2, 2] == 1 and hard[1].sum() == 1  # (9.5, 9.5) px is cell (2, 2) at stride 4
    assert hard[2, 1, 5] == 1 and hard[2].sum() == 1
    assert hard[3].sum() == 0  # an empty map stays empty
    torch.testing.assert_close(hard[0], 1.0 - hard[1:].sum(0))


def test_rescale_points_pixel_centre_convention_and_round_trip() -> None:
    from corrflow.propagation.targets import rescale_points

    xy = np.array([[0.0, 0.0], [319.0, 239.0], [np.nan, np.nan]], dtype=np.float32)
    up = rescale_points(xy, (240, 320), (320, 320))  # JHMDB's 240 x 320 to CRW's 320 x 320
    np.testing.assert_allclose(up[0], [0.0, 0.5 * 4 / 3 - 0.5], rtol=1e-6)  # y: (0 + 0.5) * 4/3 - 0.5
    np.testing.assert_allclose(up[1], [319.0, 239.5 * 4 / 3 - 0.5], rtol=1e-6)  # the last pixel centre -> 319.17
    assert np.isnan(up[2]).all()
    np.testing.assert_allclose(rescale_points(up, (320, 320), (240, 320))[:2], xy[:2], atol=1e-4)


def test_crw_heatmaps_hand_computed() -> None:
    """CRW's stamp (sigma 0.5: a 4 x 4 window, centre at offset 2) at x / stride, hand-computed:
    x = 20, y = 12 at stride 8 -> (2.5, 1.5) -> upper-left (int(1.0), int(0.0)) = (1, 0), the
    peak at column 3, row 2; the truncation of int() puts x = 8 (1.0 cells) at column 2."""
    coords = torch.tensor([[20.0, 12.0], [8.0, 12.0], [-40.0, 12.0], [float("nan"), 3.0]])
    maps = keypoints_to_heatmaps(coords, torch.ones(4, dtype=torch.bool), grid=(6, 7), stride=8, style="crw")
    assert maps.shape == (5, 6, 7)
    a = maps[1]
    assert a[2, 3] == 1.0 and a.argmax() == 2 * 7 + 3
    assert a[2, 2].item() == pytest.approx(math.exp(-2)) and a[1, 3].item() == pytest.approx(math.exp(-2))
    assert a[0, 1].item() == pytest.approx(math.exp(-16))  # the window's corner, offsets (-2, -2)
    assert a[:, 5:].sum() == 0 and a[4:].sum() == 0  # the window spans columns 1..4, rows 0..3
    assert maps[2].argmax() == 2 * 7 + 2  # x = 8 px: column 2 (rounding would give 1)
    assert maps[3].sum() == 0 and maps[4].sum() == 0  # off the grid; no position
    assert torch.equal(maps[0], (maps[1:].sum(0) == 0).float())  # binary background


def test_crw_heatmaps_decode_at_cell_times_stride() -> None:
    maps = torch.zeros(1, 6, 7)
    maps[0, 2, 3] = 1.0
    (xy,), (found,) = heatmaps_to_keypoints(maps, stride=8, topk=3, style="crw")
    assert found and xy.tolist() == [24.0, 16.0]
    (xy,), _ = heatmaps_to_keypoints(maps, stride=8, topk=3, style="centred")
    assert xy.tolist() == [27.5, 19.5]
    for x, y in [(20.0, 12.0), (33.0, 29.0), (17.0, 40.0)]:  # encode, decode: within a cell
        m = keypoints_to_heatmaps(torch.tensor([[x, y]]), torch.ones(1, dtype=torch.bool), grid=(8, 8), stride=8, style="crw")
        dx, dy = heatmaps_to_keypoints(m[1:], stride=8, topk=3, style="crw")[0][0].tolist()
        assert abs(dx - x) <= 8 and abs(dy - y) <= 8


def test_code_label_resize_reproduces_corrflows_truncated_index_interpolation(tmp_path) -> None:
    """label_resize='code': the index map (0 background, 1..N objects) is resized bilinearly and
    truncated. Cell 0 of a stride-4 grid samples columns 1 and 2: background (0) beside the
    second object (index 2) averages to index 1, the first object, which is not there (as the
    released code does); 'pool' gives the shares instead."""
    from corrflow.propagation.targets import MaskSession, MaskTargets

    mask = torch.zeros(4, 8, dtype=torch.int64)
    mask[:, 2:] = 5  # ids [3, 5] -> channels 1, 2; id 3 is absent from this frame
    code = MaskSession(mask, [3, 5], stride=4, out_dir=tmp_path, label_resize="code").labels
    assert code.shape == (3, 1, 2)
    assert code[:, 0, 0].tolist() == [0.0, 1.0, 0.0] and code[:, 0, 1].tolist() == [0.0, 0.0, 1.0]
    pool = MaskSession(mask, [3, 5], stride=4, out_dir=tmp_path, label_resize="pool").labels
    assert pool[:, 0, 0].tolist() == [0.5, 0.0, 0.5]
    # the feed-back: arg-max at input resolution (bilinear up x4), then the same resize
    targets = MaskTargets(label_resize="code")
    targets._stride = 4
    soft = torch.tensor([[0.9, 0.2], [0.0, 0.0], [0.1, 0.8]]).view(1, 3, 1, 2)
    up_argmax = torch.nn.functional.interpolate(soft, size=(4, 8), mode="bilinear", align_corners=False).argmax(1)
    assert up_argmax[0, 0].tolist() == [0, 0, 0, 0, 2, 2, 2, 2]
    hard = targets.harden(soft)
    assert hard[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0] and hard[0, :, 0, 1].tolist() == [0.0, 0.0, 1.0]
    assert MaskTargets(label_resize="pool").harden(soft).tolist() == hard.tolist()  # no boundary here: the same
    with pytest.raises(ValueError, match="label_resize"):
        MaskTargets(label_resize="nearest")
