"""MotionSqueeze: shapes, the zero start, the motion it reads, gradients, bad input."""

from __future__ import annotations

import pytest
import torch

from corrflow.models.motion_squeeze import MotionSqueeze
from tests.helpers.textures import crop_shifted, smooth_texture


def _clip(n_frames: int, dx: int, dy: int, *, c: int = 8, h: int = 16, w: int = 20) -> torch.Tensor:
    """(T, C, H, W) float32: a texture moving by (dx, dy) cells a frame."""
    big = smooth_texture(c, h + 2 * 12, w + 2 * 12, blur=1.5).float()
    return torch.cat([crop_shifted(big, h, w, 12, t * dx, t * dy) for t in range(n_frames)])


def test_starts_as_the_identity_and_keeps_shapes() -> None:
    ms = MotionSqueeze(8, n_frames=3, radius=3).eval()
    x = torch.cat([_clip(3, 1, 0), _clip(3, 0, -1)])  # B=2 clips of T=3
    y = ms(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x)  # zero-initialised last BatchNorm scale


def test_reads_the_motion_of_each_clip() -> None:
    torch.manual_seed(0)
    ms = MotionSqueeze(8, n_frames=3, radius=3, channels=8).eval()
    with torch.no_grad():  # a reduction that keeps the features (identity 1x1): the motion is the texture's
        ms.reduce.weight.copy_(torch.eye(8)[:, :, None, None])
        ms.reduce.bias.zero_()
    x = torch.cat([_clip(3, 2, 0), _clip(3, 0, -1)])
    disp, conf = ms.motion(x)
    assert disp.shape == (6, 2, 16, 20) and conf.shape == (6, 1, 16, 20)
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))
    want = torch.tensor([[2.0, 0.0]] * 3 + [[0.0, -1.0]] * 3)[:, :, None, None].expand(6, 2, 10, 14)
    torch.testing.assert_close(disp[inner], want, atol=0.05, rtol=0)  # the last frame repeats the pair before
    assert conf[inner].min() > 0.95


def test_gradients_reach_every_parameter_and_the_input() -> None:
    ms = MotionSqueeze(8, n_frames=2, radius=2, zero_init=False)
    x = _clip(2, 1, 1).requires_grad_()
    ms(x).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in ms.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert ms.reduce.weight.grad.abs().sum() > 0  # through the kernel soft-argmax and the confidence


@pytest.mark.parametrize("estimator", ["soft_argmax", "argmax"])
def test_other_estimators(estimator: str) -> None:
    ms = MotionSqueeze(8, n_frames=2, radius=2, estimator=estimator)
    assert ms(_clip(2, 1, 0)).shape == (2, 8, 16, 20)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="n_frames"):
        MotionSqueeze(8, n_frames=1)
    with pytest.raises(ValueError, match="estimator"):
        MotionSqueeze(8, n_frames=2, estimator="median")
    with pytest.raises(ValueError, match="whole clips"):
        MotionSqueeze(8, n_frames=3)(torch.zeros(4, 8, 6, 6))
