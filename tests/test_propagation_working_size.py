"""The working size of segmenter methods (method.short_side): sizes, identity without it, masks
area-averaged, probabilities back at the frame's size still summing to one."""

from __future__ import annotations

import pytest
import torch

from corrflow.propagation.working_size import WorkingSize


def test_sizes_keep_the_aspect_and_none_is_the_identity():
    assert WorkingSize(128).size((480, 854)) == (128, 228)
    assert WorkingSize(128).size((854, 480)) == (228, 128)
    assert WorkingSize(240).size((120, 200)) == (240, 400)  # enlarges too: the network's scale decides
    x = torch.rand(3, 30, 50)
    same = WorkingSize(None)
    assert same.size((30, 50)) == (30, 50) and same.frame(x) is x and same.masks(x) is x and same.back(x, (30, 50)) is x


def test_masks_are_area_averaged_and_probabilities_come_back_summing_to_one():
    ws = WorkingSize(16)
    mask = torch.zeros(1, 32, 64)
    mask[0, :2, :2] = 1.0  # a 2x2 object: one whole working cell
    small = ws.masks(mask)
    assert small.shape == (1, 16, 32) and small[0, 0, 0] == pytest.approx(1.0) and small.sum() == pytest.approx(1.0)
    probs = torch.softmax(torch.randn(3, 16, 32), 0)
    back = ws.back(probs, (32, 64))
    assert back.shape == (3, 32, 64)
    torch.testing.assert_close(back.sum(0), torch.ones(32, 64), atol=1e-5, rtol=0)


def test_tiny_short_sides_are_refused():
    with pytest.raises(ValueError, match="short_side must be at least 16"):
        WorkingSize(8)
