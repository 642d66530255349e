"""corrflow.benchmarks.flow: the warp moves pixel p to A(p) (the true flow it scores against),
and both of its measurements run on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corrflow.benchmarks.flow import random_affine, run_cost, run_epe, true_flow, warp

pytestmark = pytest.mark.usefixtures("one_thread")


def _smooth_image(h: int = 40, w: int = 56) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([0.5 + 0.4 * torch.sin(xx / 5), 0.5 + 0.4 * torch.cos(yy / 4), 0.5 + 0.4 * torch.sin((xx + yy) / 7)])


def test_warp_moves_p_to_affine_p() -> None:
    img = _smooth_image()
    affine = random_affine(np.random.default_rng(0), (40, 56), rotate=3, scale=0.03, shear=2, shift=4)
    moved = warp(img, affine)
    flow, inside = true_flow(affine, (10, 14), 4, (40, 56))  # cell centres at stride 4
    ys = (torch.arange(10) + 0.5) * 4 - 0.5
    xs = (torch.arange(14) + 0.5) * 4 - 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    tx, ty = xx + flow[0].float(), yy + flow[1].float()
    grid = torch.stack([(2 * tx + 1) / 56 - 1, (2 * ty + 1) / 40 - 1], dim=-1)[None]
    at_target = torch.nn.functional.grid_sample(moved[None], grid, align_corners=False)[0]
    at_source = torch.nn.functional.grid_sample(img[None], torch.stack([(2 * xx + 1) / 56 - 1, (2 * yy + 1) / 40 - 1], -1)[None], align_corners=False)[0]
    keep = inside.clone()
    keep[:, :1] = keep[:, -1:] = keep[:1] = keep[-1:] = False  # bilinear reads at the very edge
    assert keep.sum() > 50
    torch.testing.assert_close(at_target[:, keep], at_source[:, keep], atol=0.03, rtol=0)


def test_epe_and_cost_run_on_tiny_inputs() -> None:
    frames = [("a/0.png", _smooth_image(48, 64)), ("a/1.png", _smooth_image(48, 64).flip(-1))]
    rows = run_epe(frames=frames, features=["lab"], ckpt=None, radius=3, estimator="kernel_soft_argmax", seed=0,
                   rotate=0, scale=0, shear=0, shift=3)  # fmt: skip
    assert rows[0]["pairs"] == 2 and rows[0]["cells"] > 0 and np.isfinite(rows[0]["epe_mean_px"])
    cost = run_cost(arch="crw", size=(32, 32), n_frames=2, clips=1, repeats=1, device="cpu")
    assert [r["model"] for r in cost] == ["backbone + MotionSqueeze", "MotionSqueeze alone"] and 0 < cost[1]["share"] < 1
