import pytest
import torch

from corrflow.models.corrflow import CorrFlow
from corrflow.models.encoder import ResNetEncoder
from corrflow.models.local_attention import RestrictedLocalAttention


def make_net(**kw) -> CorrFlow:
    torch.manual_seed(0)
    enc = ResNetEncoder(out_channels=16)
    return CorrFlow(encoder=enc, attention=RestrictedLocalAttention(radius=2), n_bins=4, **kw).eval()


def clip(t: int = 3):
    torch.manual_seed(1)
    return torch.rand(2, t, 3, 32, 32), torch.randint(0, 4, (2, t, 32, 32))


def test_losses_are_finite_and_all_parts_are_reported():
    frames, labels = clip()
    out = make_net()(frames, labels, use_gt=[True])
    for key in ["loss", "loss_rec", "loss_cycle", "loss_rec_1", "loss_rec_2", "loss_cycle_1", "loss_cycle_2"]:
        assert torch.isfinite(out[key]), key
    assert out["pred_1"].shape == (2, 4, 8, 8)
    torch.testing.assert_close(out["loss"], out["loss_rec"] + 0.1 * out["loss_cycle"])
    torch.testing.assert_close(out["loss_rec"], out["loss_rec_1"] + out["loss_rec_2"])
    torch.testing.assert_close(out["pred_1"].sum(1), torch.ones(2, 8, 8))  # a distribution per cell


def test_scheduled_sampling_changes_only_the_second_step():
    frames, labels = clip()
    net = make_net()
    with torch.no_grad():
        gt = net(frames, labels, use_gt=[True])
        own = net(frames, labels, use_gt=[False])
    torch.testing.assert_close(gt["loss_rec_1"], own["loss_rec_1"])
    assert not torch.allclose(gt["loss_rec_2"], own["loss_rec_2"])
    torch.testing.assert_close(gt["loss_cycle"], own["loss_cycle"])  # cycles always chain predictions


def _bilinear_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """(n_out, n_in) float64 weights of 1-D linear resampling with ``align_corners=False``, from
    its definition: output p reads the input at (p + 0.5) * n_in / n_out - 0.5 (clamped at 0),
    between its two nearest pixels (the last pixel repeated past the end)."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for p in range(n_out):
        src = max((p + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(src), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        m[p, i0] += 1 - (src - i0)
        m[p, i1] += src - i0
    return m


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, H, W) -> (B, K, *size), bilinear, separably by the two matrices."""
    my, mx = _bilinear_matrix(size[0], x.shape[-2]), _bilinear_matrix(size[1], x.shape[-1])
    return torch.einsum("ph,bkhw,qw->bkpq", my, x.double(), mx)


def _reference_labels(labels: torch.Tensor, size: tuple[int, int], n_bins: int) -> torch.Tensor:
    """(B, H, W) bins -> (B, K, h, w) one-hot of the bilinearly resized, truncated index map (the
    released code's label downsampling)."""
    index = _resize(labels[:, None].double(), size)[:, 0].floor().long()
    return torch.nn.functional.one_hot(index, n_bins).permute(0, 3, 1, 2).double()


def _colourise(target: torch.Tensor, ref: torch.Tensor, colours: torch.Tensor, radius: int) -> torch.Tensor:
    """Target (B, C, h, w) and reference (B, C, h, w) features, reference colours (B, K, h, w) ->
    (B, K, h, w): a dense softmax of dot products over the reference positions within ``radius``
    (Chebyshev) of each target position, in float64."""
    b, _, h, w = target.shape
    logits = torch.einsum("bcyx,bcuv->byxuv", target.double(), ref.double())
    y, x = torch.arange(h), torch.arange(w)
    near_y = (y[:, None] - y[None, :]).abs() <= radius  # (y, u)
    near_x = (x[:, None] - x[None, :]).abs() <= radius  # (x, v)
    near = near_y[:, None, :, None] & near_x[None, :, None, :]  # (y, x, u, v)
    logits = logits.masked_fill(~near, float("-inf")).reshape(b, h, w, h * w)
    weights = torch.softmax(logits, dim=-1).reshape(b, h, w, h, w)
    return torch.einsum("byxuv,bkuv->bkyx", weights, colours.double())


def _nll(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean -log(p + 1e-8) of the true bins, the prediction upsampled to the labels' size."""
    probs = _resize(pred, tuple(labels.shape[-2:]))
    return -torch.log(probs.gather(1, labels[:, None]) + 1e-8).mean()


@pytest.mark.parametrize("use_gt", [True, False], ids=["gt-reference", "own-prediction"])
def test_losses_match_an_independent_float64_chain(use_gt):
    """Reconstruction 0 -> 1 -> 2 and the cycles 0 -> 1 -> 0 and 0 -> 1 -> 2 -> 1 -> 0, recomputed
    by hand on the model's own encoder features: the cycles chain soft predictions from frame 0's
    ground truth (whatever ``use_gt``), each chained prediction goes up to the input size and back,
    and everything is scored by NLL at the input size."""
    frames, labels = clip()
    net = make_net()
    with torch.no_grad():
        out = net(frames, labels, use_gt=[use_gt])
        feats = net.features(frames)  # the only part of the model the reference uses
    size_in, size = (32, 32), (8, 8)
    gt = [_reference_labels(labels[:, i], size, 4) for i in range(3)]

    def step(dst: int, src: int, ref: torch.Tensor) -> torch.Tensor:
        return _colourise(feats[:, dst], feats[:, src], ref, radius=2)

    def chain(pred: torch.Tensor) -> torch.Tensor:
        return _resize(_resize(pred, size_in), size)

    p1 = step(1, 0, gt[0])
    p2 = step(2, 1, gt[1] if use_gt else chain(p1))
    back_from_1 = step(0, 1, chain(p1))
    back_from_2 = step(0, 1, chain(step(1, 2, chain(step(2, 1, chain(p1))))))
    expected = {
        "loss_rec_1": _nll(p1, labels[:, 1]),
        "loss_rec_2": _nll(p2, labels[:, 2]),
        "loss_cycle_1": _nll(back_from_1, labels[:, 0]),
        "loss_cycle_2": _nll(back_from_2, labels[:, 0]),
    }
    expected["loss"] = sum(expected[k] for k in ("loss_rec_1", "loss_rec_2")) + 0.1 * sum(
        expected[k] for k in ("loss_cycle_1", "loss_cycle_2")
    )
    for key, value in expected.items():
        torch.testing.assert_close(out[key].double(), value, rtol=1e-4, atol=0.0, msg=lambda m, key=key: f"{key}: {m}")
    # logits reach ~800 here, so the model's float32 softmax is good to ~1e-5
    torch.testing.assert_close(out["pred_1"].double(), p1, rtol=0.0, atol=1e-4)
    torch.testing.assert_close(out["pred_2"].double(), p2, rtol=0.0, atol=1e-4)


def test_encode_per_frame_batchnorm_statistics_per_frame_index():
    """In training mode, per-frame encoding normalises each frame index over the batch alone (as
    the released code's separate encoder calls); joint encoding mixes the clip's frames. In eval
    mode (running statistics) the two are the same function."""
    frames, _ = clip()
    per, joint = make_net(encode_per_frame=True), make_net(encode_per_frame=False)
    joint.load_state_dict(per.state_dict())
    with torch.no_grad():
        per.train(), joint.train()
        got = per.features(frames)
        want = torch.stack([per.encoder(frames[:, i]) for i in range(frames.shape[1])], dim=1)
        torch.testing.assert_close(got, want)
        assert not torch.allclose(joint.features(frames), want)
        joint.load_state_dict(per.state_dict())  # the same running statistics
        per.eval(), joint.eval()
        torch.testing.assert_close(per.features(frames), joint.features(frames))


@pytest.mark.parametrize("mode", ["code", "nearest", "area"])
def test_label_downsampling_gives_distributions(mode):
    net = make_net(label_downsampling=mode)
    labels = torch.randint(0, 4, (2, 32, 32))
    d = net.downsample_labels(labels, (8, 8))
    assert d.shape == (2, 4, 8, 8)
    torch.testing.assert_close(d.sum(1), torch.ones(2, 8, 8))


def test_code_downsampling_of_a_constant_map_keeps_the_bin():
    net = make_net()
    d = net.downsample_labels(torch.full((1, 32, 32), 3), (8, 8))
    assert (d.argmax(1) == 3).all()


def test_wrong_use_gt_length_is_an_error():
    frames, labels = clip(4)
    with pytest.raises(ValueError, match="use_gt needs 2"):
        make_net()(frames, labels, use_gt=[True])
