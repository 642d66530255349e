"""LabFeatures: Lab colour pooled to the stride."""

from __future__ import annotations

import pytest
import torch
from kornia.color import rgb_to_lab

from corrflow.features.lab import LabFeatures


def test_lab_of_flat_cells_is_the_cells_colour() -> None:
    x = torch.zeros(1, 3, 8, 12)
    x[:, :, :4, :4] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # a red cell
    x[:, :, 4:, 8:] = torch.tensor([0.2, 0.5, 0.9])[:, None, None]
    feats = LabFeatures(stride=4)(x)
    assert feats.shape == (1, 3, 2, 3)
    red = rgb_to_lab(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))[0, :, 0, 0]
    torch.testing.assert_close(feats[0, :, 0, 0], red)
    assert feats[0, 0, 0, 1] == pytest.approx(0.0, abs=1e-4)  # black: L = 0


def test_pooling_averages_lab() -> None:
    x = torch.rand(2, 3, 16, 8)
    lab = rgb_to_lab(x)
    expected = torch.stack([lab[:, :, :8].mean(dim=(2, 3)), lab[:, :, 8:].mean(dim=(2, 3))], dim=-1)[..., None]
    torch.testing.assert_close(LabFeatures(stride=8)(x), expected)
    assert LabFeatures(stride=1)(x).shape == (2, 3, 16, 8)
    with pytest.raises(ValueError):
        LabFeatures(stride=0)
