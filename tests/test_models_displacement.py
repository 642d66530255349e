"""Displacements read off the local correlation of a smooth random 16-channel texture and its
shift by a known (dx, dy), over the whole frame (border cells, whose window is cut by the frame,
included wherever the true match is inside the frame).

What the estimators achieve here, at MotionSqueeze's settings (M = 7, sigma 5, beta 100; errors
are end-point errors in cells, measured by these tests' inputs):
- integer shifts: kernel soft-argmax within 0.05 cells everywhere (0.030 at worst) (arg-max exact);
- sub-cell shifts: kernel soft-argmax lands on the nearest cell or a neighbour of it: mean error
  about 0.5 cells (the rounding error of (0.5, 0.25) is 0.56), never a whole cell off. At beta 100
  on cosines its softmax is nearly an arg-max; plain soft-argmax interpolates further on smooth
  textures (mean 0.14 with a 3-cell blur).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from corrflow.attention import local_correlation
from corrflow.models.motion.displacement import (
    confidence,
    displacement_argmax,
    displacement_kernel_soft_argmax,
    displacement_soft_argmax,
    estimate_displacement,
    motion_from_features,
    radius_of,
)
from tests.helpers.textures import crop_shifted, match_inside, smooth_texture

H, W, PAD = 40, 48, 12


def _pair(dx: float, dy: float, *, blur: float = 1.5):
    big = smooth_texture(16, H + 2 * PAD, W + 2 * PAD, blur=blur)
    return big[:, :, PAD : PAD + H, PAD : PAD + W], crop_shifted(big, H, W, PAD, dx, dy)


def _epe(disp: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """(H, W) end-point error where the true match is inside the frame (NaN elsewhere)."""
    e = ((disp[0, 0] - dx) ** 2 + (disp[0, 1] - dy) ** 2).sqrt()
    return e.masked_fill(~match_inside(H, W, dx, dy), math.nan)


@pytest.mark.parametrize("dx,dy", [(3, -2), (-7, 5), (0, 0), (6, 7)])
def test_integer_shifts_recovered_everywhere(dx: int, dy: int) -> None:
    f0, f1 = _pair(dx, dy)
    disp, _ = motion_from_features(f0, f1, radius=7)
    err = _epe(disp, dx, dy)
    assert err.nan_to_num(0).max() < 0.05
    assert torch.isfinite(err[:7]).any() and torch.isfinite(err[:, -7:]).any()  # border cells were scored
    exact, _ = motion_from_features(f0, f1, radius=7, estimator="argmax")
    assert _epe(exact, dx, dy).nan_to_num(0).max() == 0


@pytest.mark.parametrize("dx,dy", [(3, -2), (-7, 5), (6, 7)])
def test_integer_shifts_recovered_everywhere_from_the_relu_volume(dx: int, dy: int) -> None:
    """MotionSqueeze's default volume (cosines ReLU'd, 0 outside the frame, every offset in the
    softmax): the out-of-frame offsets' logits (0) are e^-100 of the match's, so border cells read as well."""
    f0, f1 = _pair(dx, dy)
    disp, conf = motion_from_features(f0, f1, radius=7, correlation="relu")
    err = _epe(disp, dx, dy)
    assert err.nan_to_num(0).max() < 0.05
    assert torch.isfinite(err[:7]).any() and torch.isfinite(err[:, -7:]).any()
    assert conf.min() >= 0


@pytest.mark.parametrize("dx,dy", [(0.5, 0.25), (2.3, -4.6), (-6.5, 1.75)])
def test_sub_cell_shifts_to_within_a_cell(dx: float, dy: float) -> None:
    f0, f1 = _pair(dx, dy)
    disp, _ = motion_from_features(f0, f1, radius=7)
    err = _epe(disp, dx, dy)
    assert err.nanmean() < 0.55
    assert err.nan_to_num(0).max() < 0.95  # never further than the far corner of the true cell
    near = displacement_argmax(local_correlation(F.normalize(f0, dim=1), F.normalize(f1, dim=1), radius=7))
    assert err.nanmean() < _epe(near, dx, dy).nanmean()  # a little better than rounding


def test_soft_argmax_interpolates_sub_cell_shifts_of_smooth_textures() -> None:
    f0, f1 = _pair(2.3, -4.6, blur=3.0)
    disp, _ = motion_from_features(f0, f1, radius=7, estimator="soft_argmax")
    assert _epe(disp, 2.3, -4.6).nanmean() < 0.2


def test_confidence_drops_on_an_occluded_region() -> None:
    dx, dy = 2, 1
    f0, f1 = _pair(dx, dy)
    occluder = smooth_texture(16, 12, 14, seed=7)
    f1 = f1.clone()
    f1[:, :, 14:26, 20:34] = occluder  # frame t+1 covers this block with something new
    _, conf = motion_from_features(f0, f1, radius=7)
    assert conf.shape == (1, 1, H, W)
    # Frame t's cells whose content lands well inside the block: their match is gone.
    hidden = conf[0, 0, 14 - dy + 3 : 26 - dy - 3, 20 - dx + 3 : 34 - dx - 3]
    visible = conf[0, 0][match_inside(H, W, dx, dy)]
    assert visible.median() > 0.99
    assert hidden.max() < visible.median() - 0.1


def test_kernel_suppresses_a_second_mode_far_from_the_best() -> None:
    """Two peaks: soft-argmax averages them, the kernel keeps the best one."""
    radius = 7
    corr = torch.full((1, (2 * radius + 1) ** 2, 1, 1), -1.0, dtype=torch.float64)
    best, other = (radius + 2) * 15 + radius + 3, (radius - 6) * 15 + radius - 6  # (dx, dy) = (3, 2) and (-6, -6)
    corr[0, best], corr[0, other] = 1.0, 0.99
    ksa = displacement_kernel_soft_argmax(corr)[0, :, 0, 0]
    sa = displacement_soft_argmax(corr)[0, :, 0, 0]
    torch.testing.assert_close(ksa, torch.tensor([3.0, 2.0], dtype=torch.float64), atol=1e-3, rtol=0)
    assert (sa - torch.tensor([3.0, 2.0], dtype=torch.float64)).norm() > 2


def test_out_of_frame_offsets_get_no_weight_and_gradients_are_finite() -> None:
    f0, f1 = _pair(1.5, -0.5)
    f0, f1 = f0[:, :, :6, :7].clone().requires_grad_(), f1[:, :, :6, :7].clone().requires_grad_()
    corr = local_correlation(F.normalize(f0, dim=1), F.normalize(f1, dim=1), radius=7)
    assert torch.isinf(corr).any()
    for est in ("kernel_soft_argmax", "soft_argmax"):
        d = estimate_displacement(corr, estimator=est)
        assert d.shape == (1, 2, 6, 7)
        # Displacements stay inside the frame: (y + dy, x + dx) within [0, H-1] x [0, W-1].
        xs, ys = torch.arange(7) + d[0, 0].detach(), torch.arange(6)[:, None] + d[0, 1].detach()
        assert xs.min() >= -1e-6 and xs.max() <= 6 + 1e-6 and ys.min() >= -1e-6 and ys.max() <= 5 + 1e-6
        g0, g1 = torch.autograd.grad((d.sum() + confidence(corr).sum()), (f0, f1), retain_graph=True)
        assert torch.isfinite(g0).all() and torch.isfinite(g1).all() and g1.abs().sum() > 0


def test_shapes_and_errors() -> None:
    corr = torch.randn(2, 25, 3, 4)
    assert radius_of(corr) == 2
    assert displacement_argmax(corr).shape == (2, 2, 3, 4)
    assert confidence(corr).shape == (2, 1, 3, 4)
    with pytest.raises(ValueError, match="window offsets"):
        radius_of(torch.randn(1, 24, 3, 4))
    with pytest.raises(ValueError, match="estimator"):
        estimate_displacement(corr, estimator="median")
    with pytest.raises(ValueError, match="correlation"):
        motion_from_features(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3), radius=1, correlation="abs")


def test_ties_for_the_best_offset_go_to_the_one_nearest_zero() -> None:
    """An all-zero (ReLU'd, no positive cosine) window: arg-max reads (0, 0), not the corner (-M, -M)."""
    corr = torch.zeros(1, 25, 1, 1)
    assert displacement_argmax(corr)[0, :, 0, 0].tolist() == [0.0, 0.0]
    corr[0, 0] = corr[0, 24] = 0.5  # two tied bests at (-2, -2) and (2, 2), and one nearer (1, 0) tied with them
    corr[0, 2 * 5 + 3] = 0.5
    assert displacement_argmax(corr)[0, :, 0, 0].tolist() == [1.0, 0.0]
