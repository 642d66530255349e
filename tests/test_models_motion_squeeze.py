"""MotionSqueeze: the release's choices as defaults (arunos728/MotionSqueeze, resnet_TSM.py), each
variant against a float64 reference written out here, hand-computed correlations (a window with no
positive cosine, offsets outside the frame), the zero start of the earlier variant, the motion it
reads, gradients, the config it is rebuilt from, bad input."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from corrflow.models.motion.displacement import (
    correlation_volume,
    displacement_kernel_soft_argmax,
    estimate_displacement,
)
from corrflow.models.motion.motion_squeeze import MotionSqueeze
from tests.helpers.textures import crop_shifted, smooth_texture

pytestmark = pytest.mark.usefixtures("one_thread")

RELEASE = dict(reduction="bn_relu", correlation="relu", first_kernel=7, widths=[16, 32, 64], final_relu=True, zero_init=False)
EARLIER = dict(reduction="bias", correlation="signed", first_kernel=3, widths=[32, 64, 128], final_relu=False, zero_init=True)


def _clip(n_frames: int, dx: int, dy: int, *, c: int = 8, h: int = 16, w: int = 20) -> torch.Tensor:
    """(T, C, H, W) float32: a texture moving by (dx, dy) cells a frame."""
    big = smooth_texture(c, h + 2 * 12, w + 2 * 12, blur=1.5).float()
    return torch.cat([crop_shifted(big, h, w, 12, t * dx, t * dy) for t in range(n_frames)])


# -- a float64 reference, written out -----------------------------------------------------------

def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    """Eval-mode BatchNorm from its running statistics."""
    v = lambda t: t.view(1, -1, 1, 1)  # noqa: E731
    return (x - v(bn.running_mean)) / torch.sqrt(v(bn.running_var) + bn.eps) * v(bn.weight) + v(bn.bias)


def _read_window(vals: list[float], offsets: list[tuple[int, int]], *, sigma: float, beta: float) -> tuple[float, float, float]:
    """One location's kernel soft-argmax (dx, dy) and confidence, by the paper's recipe: the best
    offset (ties: nearest (0, 0)), a Gaussian of sigma cells around it times the correlations,
    softmax(beta * .), expected offset; the confidence is the best correlation."""
    best_val = max(vals)
    best = min((o for o, v in zip(offsets, vals, strict=True) if v == best_val), key=lambda o: o[0] ** 2 + o[1] ** 2)
    logits = []
    for (dx, dy), v in zip(offsets, vals, strict=True):
        k = math.exp(-((dx - best[0]) ** 2 + (dy - best[1]) ** 2) / (2 * sigma**2))
        logits.append(-math.inf if v == -math.inf else beta * k * v)
    m = max(logits)
    ws = [math.exp(lg - m) for lg in logits]
    z = sum(ws)
    return sum(w * o[0] for w, o in zip(ws, offsets, strict=True)) / z, sum(w * o[1] for w, o in zip(ws, offsets, strict=True)) / z, best_val


def reference(ms: MotionSqueeze, x: torch.Tensor, *, n_frames: int, radius: int, sigma: float, beta: float, reduction: str,
              correlation: str, first_kernel: int, widths: list[int], final_relu: bool, **_) -> torch.Tensor:  # fmt: skip
    """x + MotionSqueeze(x) in float64 with ``ms``'s weights, every step spelt out for the given
    settings (not read from ``ms``); BatchNorms in eval mode."""
    x = x.double()
    w = ms.reduce.weight.double()[:, :, 0, 0]
    f = torch.einsum("oc,nchw->nohw", w, x)
    if reduction == "bn_relu":
        assert ms.reduce.bias is None
        f = torch.relu(_bn(f, ms.reduce_norm[0]))
    else:
        f = f + ms.reduce.bias.double().view(1, -1, 1, 1)
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n, _, h, wd = f.shape
    offsets = [(dx, dy) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    motion = torch.zeros(n, 3, h, wd, dtype=torch.float64)
    for clip in range(n // n_frames):
        for t in range(n_frames - 1):
            a, b = f[clip * n_frames + t], f[clip * n_frames + t + 1]
            for y in range(h):
                for xx in range(wd):
                    vals = []
                    for dx, dy in offsets:
                        if 0 <= y + dy < h and 0 <= xx + dx < wd:
                            c = float((a[:, y, xx] * b[:, y + dy, xx + dx]).sum())
                            vals.append(max(c, 0.0) if correlation == "relu" else c)
                        else:
                            vals.append(0.0 if correlation == "relu" else -math.inf)
                    dxs, dys, conf = _read_window(vals, offsets, sigma=sigma, beta=beta)
                    motion[clip * n_frames + t, :, y, xx] = torch.tensor([dxs / radius, dys / radius, conf], dtype=torch.float64)
        motion[clip * n_frames + n_frames - 1] = motion[clip * n_frames + n_frames - 2]  # the last frame repeats the pair before
    y = motion
    dims = [3, *widths, x.shape[1]]
    for i, block in enumerate(ms.blocks):
        k = first_kernel if i == 0 else 3
        dw, pw = block[0], block[3]
        assert dw.kernel_size == (k, k) and dw.groups == dims[i] and dw.bias is None, (i, dw)
        assert (pw.in_channels, pw.out_channels, pw.kernel_size) == (dims[i], dims[i + 1], (1, 1)) and pw.bias is None, (i, pw)
        y = torch.relu(_bn(F.conv2d(y, dw.weight.double(), padding=k // 2, groups=dims[i]), block[1]))
        y = _bn(F.conv2d(y, pw.weight.double()), block[4])
        if i < 3 or final_relu:
            y = torch.relu(y)
    return x + y


def _randomise_norms(ms: MotionSqueeze, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in ms.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(torch.rand(c, generator=g) - 0.5)
        if ms.reduce.bias is not None:
            ms.reduce.bias.copy_(torch.rand(ms.reduce.bias.shape, generator=g) - 0.5)


VARIANTS = {
    "release": RELEASE,
    "earlier": {**EARLIER, "zero_init": False},  # the last BN randomised below in any case
    "bias+relu": {**RELEASE, "reduction": "bias"},  # signed cosines reach the ReLU
    "bn_relu+signed": {**RELEASE, "correlation": "signed"},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_against_the_float64_reference(variant: str) -> None:
    settings = VARIANTS[variant]
    torch.manual_seed(1)
    kw = dict(n_frames=3, radius=2, sigma=1.5, beta=4.0)  # a soft softmax and a kernel that varies over the window
    ms = MotionSqueeze(6, channels=5, **kw, **settings).double().eval()
    _randomise_norms(ms, seed=2)
    x = torch.randn(6, 6, 5, 7, dtype=torch.float64)  # two clips of 3 frames, a 5 x 7 map: most windows cut by the frame
    with torch.no_grad():
        got = ms(x)
        want = reference(ms, x, **kw, **settings)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(got, x)  # the motion features are not trivially zero


def test_the_defaults_are_the_release() -> None:
    ms = MotionSqueeze(8, n_frames=2)
    for key, value in {"channels": 64, "radius": 7, "estimator": "kernel_soft_argmax", "sigma": 5.0, "beta": 100.0, **RELEASE}.items():
        assert ms.config[key] == value, key
    assert ms.reduce.bias is None and isinstance(ms.reduce_norm[0], torch.nn.BatchNorm2d) and isinstance(ms.reduce_norm[1], torch.nn.ReLU)
    assert [b[0].kernel_size for b in ms.blocks] == [(7, 7), (3, 3), (3, 3), (3, 3)]
    assert [b[3].out_channels for b in ms.blocks] == [16, 32, 64, 8]
    assert all(isinstance(b[-1], torch.nn.ReLU) for b in ms.blocks)
    assert torch.equal(ms.last_norm.weight, torch.ones(8))


def test_the_msnet_config_builds_the_release_and_the_earlier_variant(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    from tests.test_finetune import compose_finetune_cfg

    cfg = compose_finetune_cfg(tmp_path, ["experiment=msnet", "model.net.n_classes=4", "data.n_segments=4"])
    ms = instantiate(cfg.model.backbone.motion)(128)
    assert {k: ms.config[k] for k in RELEASE} == RELEASE and ms.config["n_frames"] == 4
    earlier = [f"model.backbone.motion.{k}={v}" for k, v in EARLIER.items() if k != "widths"] + ["model.backbone.motion.widths=[32,64,128]"]
    cfg = compose_finetune_cfg(tmp_path, ["experiment=msnet", "model.net.n_classes=4", *earlier])
    ms = instantiate(cfg.model.backbone.motion)(128)
    assert {k: ms.config[k] for k in EARLIER} == EARLIER
    assert ms.reduce.bias is not None and isinstance(ms.reduce_norm, torch.nn.Identity) and not isinstance(ms.blocks[-1][-1], torch.nn.ReLU)


def test_reduction_is_a_conv_without_bias_then_batch_norm_on_batch_statistics_then_relu() -> None:
    torch.manual_seed(0)
    ms = MotionSqueeze(4, n_frames=2, channels=3).double().train()
    x = torch.randn(4, 4, 5, 6, dtype=torch.float64)
    y = torch.einsum("oc,nchw->nohw", ms.reduce.weight[:, :, 0, 0], x)
    mean, var = y.mean(dim=(0, 2, 3), keepdim=True), y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    want = torch.relu((y - mean) / torch.sqrt(var + 1e-5))  # BN's affine starts at 1 / 0
    torch.testing.assert_close(ms.reduced(x), want, rtol=1e-10, atol=1e-10)
    assert (want == 0).any()  # the ReLU cut something


# -- the correlation: hand-computed ------------------------------------------------------------

def test_a_window_with_no_positive_cosine_reads_no_motion() -> None:
    """Every cosine negative, the least negative at (3, 2): the ReLU'd volume is all zeros, so
    the kernel soft-argmax reads exactly (0, 0) and the confidence 0; the signed volume weights the
    cells far from (3, 2) most (beta * kernel * corr is nearest 0 there), pointing away from it."""
    radius = 7
    corr = torch.full((1, (2 * radius + 1) ** 2, 1, 1), -0.5, dtype=torch.float64)
    corr[0, (radius + 2) * 15 + radius + 3] = -0.1  # (dx, dy) = (3, 2)
    signed = displacement_kernel_soft_argmax(corr)[0, :, 0, 0]
    assert float(signed @ torch.tensor([3.0, 2.0], dtype=torch.float64)) < -5  # away from the best match
    relu = torch.relu(corr)
    torch.testing.assert_close(displacement_kernel_soft_argmax(relu)[0, :, 0, 0], torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    # the same through the module: frame t+1 holds the negated features of frame t
    ms = MotionSqueeze(2, n_frames=2, channels=2, radius=2, reduction="bias", correlation="relu").eval()
    with torch.no_grad():
        ms.reduce.weight.copy_(torch.eye(2)[:, :, None, None])
        ms.reduce.bias.zero_()
    a = torch.tensor([1.0, 0.2]).view(1, 2, 1, 1).expand(1, 2, 4, 5) + 0.1 * torch.rand(1, 2, 4, 5)
    disp, conf = ms.motion(torch.cat([a, -a]))
    assert torch.equal(disp, torch.zeros_like(disp)) and torch.equal(conf, torch.zeros_like(conf))


def _two_cells() -> tuple[torch.Tensor, torch.Tensor]:
    """A 1 x 2 map: frame t is (1, 0) at both cells; frame t+1 is (0, 1) at the left, (1, 0) at the right."""
    ft = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64).view(1, 2, 1, 2)
    fn = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64).view(1, 2, 1, 2)
    return ft, fn


def test_offsets_outside_the_frame_are_zero_and_weighted_when_relu_and_excluded_when_signed() -> None:
    """Radius 1, beta 1, at the left cell: inside the frame only (0, 0) (cosine 0) and (1, 0)
    (cosine 1). ReLU'd: the 7 offsets outside and (0, 0) are 0, so softmax gives e / (e + 8) to
    (1, 0) and 1 / (e + 8) to each other offset, whose dx sum to -1: dx = (e - 1) / (e + 8).
    Signed: only the two inside count: dx = e / (e + 1). dy = 0 and the confidence 1 both ways."""
    e = math.e
    ft, fn = _two_cells()
    relu = correlation_volume(ft, fn, radius=1, correlation="relu")
    assert relu[0, :, 0, 0].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0]
    signed = correlation_volume(ft, fn, radius=1, correlation="signed")
    assert torch.isinf(signed[0, :, 0, 0]).sum() == 7
    for est in ("kernel_soft_argmax", "soft_argmax"):
        d_relu = estimate_displacement(relu, estimator=est, beta=1.0)[0, :, 0, 0]
        d_signed = estimate_displacement(signed, estimator=est, beta=1.0)[0, :, 0, 0]
        torch.testing.assert_close(d_relu, torch.tensor([(e - 1) / (e + 8), 0.0], dtype=torch.float64), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(d_signed, torch.tensor([e / (e + 1), 0.0], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # the module passes its setting through (identity reduction; the release's BN in eval mode only rescales)
    for correlation, dx in (("relu", (e - 1) / (e + 8)), ("signed", e / (e + 1))):
        ms = MotionSqueeze(2, n_frames=2, channels=2, radius=1, beta=1.0, correlation=correlation).double().eval()
        with torch.no_grad():
            ms.reduce.weight.copy_(torch.eye(2, dtype=torch.float64)[:, :, None, None])
        disp, conf = ms.motion(torch.cat([ft, fn]))
        torch.testing.assert_close(disp[0, :, 0, 0], torch.tensor([dx, 0.0], dtype=torch.float64), rtol=1e-9, atol=1e-9)
        assert conf[0, 0, 0, 0].item() == pytest.approx(1.0, abs=1e-9)


# -- the zero start (the earlier variant) --------------------------------------------------------

def test_zero_start_keeps_the_input_and_still_learns() -> None:
    ms = MotionSqueeze(8, n_frames=3, radius=3, zero_init=True, final_relu=False).eval()
    x = torch.cat([_clip(3, 1, 0), _clip(3, 0, -1)])  # B=2 clips of T=3
    torch.testing.assert_close(ms(x), x)
    ms.train()(x).square().sum().backward()
    assert ms.last_norm.weight.grad.abs().sum() > 0  # it can leave zero


def test_zero_start_with_the_final_relu_is_refused_because_it_could_not_learn() -> None:
    with pytest.raises(ValueError, match="final_relu=false"):
        MotionSqueeze(8, n_frames=2, zero_init=True)
    # why: a ReLU after a BN at zero passes no gradient back to it
    ms = MotionSqueeze(8, n_frames=2, radius=2)
    with torch.no_grad():
        ms.last_norm.weight.zero_()
        ms.last_norm.bias.zero_()
    ms(_clip(2, 1, 0)).square().sum().backward()
    assert ms.last_norm.weight.grad.abs().sum() == 0 and ms.last_norm.bias.grad.abs().sum() == 0


def test_the_release_default_changes_the_features_from_the_start() -> None:
    ms = MotionSqueeze(8, n_frames=2, radius=2).train()  # batch statistics: the transform's BNs normalise
    x = torch.cat([_clip(2, 1, 0), _clip(2, 0, 1)])
    with torch.no_grad():
        y = ms(x)
    assert (y >= x).all() and (y - x).abs().max() > 0.5  # adds BN + ReLU features: non-negative, not zero


# -- what it reads on moving textures ---------------------------------------------------------

def test_reads_the_motion_of_each_clip() -> None:
    ms = MotionSqueeze(8, n_frames=3, radius=3, channels=16).eval()
    with torch.no_grad():  # a reduction that keeps the features: (x, -x), each ReLU'd, loses nothing
        ms.reduce.weight.copy_(torch.cat([torch.eye(8), -torch.eye(8)])[:, :, None, None])
    x = torch.cat([_clip(3, 2, 0), _clip(3, 0, -1)])
    disp, conf = ms.motion(x)
    assert disp.shape == (6, 2, 16, 20) and conf.shape == (6, 1, 16, 20)
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))
    want = torch.tensor([[2.0, 0.0]] * 3 + [[0.0, -1.0]] * 3)[:, :, None, None].expand(6, 2, 10, 14)
    torch.testing.assert_close(disp[inner], want, atol=0.05, rtol=0)  # the last frame repeats the pair before
    assert conf[inner].min() > 0.95


@pytest.mark.parametrize("settings", [RELEASE, {**EARLIER, "zero_init": False}], ids=["release", "earlier"])
def test_gradients_of_the_input_and_every_parameter_match_finite_differences(settings: dict) -> None:
    """Backpropagation through the reduction, the correlation, the kernel soft-argmax, the
    confidence and the transformation agrees with central differences in float64 (gradcheck's
    fast mode: random projections of the whole Jacobian, input and every parameter at once; on a
    mismatch it recomputes the full Jacobians to report, which takes a minute or two)."""
    from torch.func import functional_call

    torch.manual_seed(0)
    ms = MotionSqueeze(4, n_frames=2, channels=3, radius=1, sigma=1.0, beta=4.0, **settings).double().eval()
    _randomise_norms(ms, seed=2)
    x = torch.randn(2, 4, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_()
    names = [n for n, _ in ms.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in ms.parameters()]
    # the branch alone (the output minus x): the identity's gradient would swamp the motion's
    f = lambda x, *ps: functional_call(ms, dict(zip(names, ps, strict=True)), (x,)) - x  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


def test_features_that_the_reduction_zeroes_give_finite_gradients() -> None:
    """A ReLU'd reduction can give a cell all-zero features (no direction to normalise)."""
    ms = MotionSqueeze(4, n_frames=2, channels=3, radius=1)
    x = torch.randn(2, 4, 5, 5)
    x[:, :, 2, 2] = 0  # BN's shift makes some cells' reduced features all-negative; force one too
    with torch.no_grad():
        ms.reduce_norm[0].bias.fill_(-3.0)  # most cells' reduced features are zero after the ReLU
    x.requires_grad_()
    ms(x).sum().backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in ms.parameters() if p.grad is not None)


@pytest.mark.parametrize("estimator", ["soft_argmax", "argmax"])
def test_other_estimators(estimator: str) -> None:
    ms = MotionSqueeze(8, n_frames=2, radius=2, estimator=estimator).eval()
    with torch.no_grad():
        ms.reduce.weight.copy_(torch.cat([torch.eye(8), -torch.eye(8), torch.zeros(48, 8)])[:, :, None, None])
    disp, _ = ms.motion(_clip(2, 1, 0))
    torch.testing.assert_close(disp[:, :, 3:-3, 3:-3].mean(dim=(0, 2, 3)), torch.tensor([1.0, 0.0]), atol=0.1, rtol=0)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="n_frames"):
        MotionSqueeze(8, n_frames=1)
    with pytest.raises(ValueError, match="estimator"):
        MotionSqueeze(8, n_frames=2, estimator="median")
    with pytest.raises(ValueError, match="reduction"):
        MotionSqueeze(8, n_frames=2, reduction="none")
    with pytest.raises(ValueError, match="correlation"):
        MotionSqueeze(8, n_frames=2, correlation="abs")
    with pytest.raises(ValueError, match="first_kernel"):
        MotionSqueeze(8, n_frames=2, first_kernel=4)
    with pytest.raises(ValueError, match="widths"):
        MotionSqueeze(8, n_frames=2, widths=(16, 32))
    with pytest.raises(ValueError, match="whole clips"):
        MotionSqueeze(8, n_frames=3)(torch.zeros(4, 8, 6, 6))


def test_config_rebuilds_the_same_module() -> None:
    torch.manual_seed(0)
    ms = MotionSqueeze(8, n_frames=2, radius=2, **{**EARLIER, "zero_init": False}).eval()
    again = MotionSqueeze(**ms.config).eval()
    again.load_state_dict(ms.state_dict())
    x = _clip(2, 1, 0)
    torch.testing.assert_close(again(x), ms(x))
    assert partial(MotionSqueeze, n_frames=2)(8).config["in_channels"] == 8
