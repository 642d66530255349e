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


def test_first_cycle_is_two_colourisations_from_frame_zero():
    frames, labels = clip()
    net = make_net()
    with torch.no_grad():
        out = net(frames, labels, use_gt=[True])
        feats = net.features(frames)
        size = feats.shape[-2:]
        p1 = net.colourise(feats[:, 1], feats[:, 0], net.downsample_labels(labels[:, 0], size))
        p0 = net.colourise(feats[:, 0], feats[:, 1], net.chain(p1, (32, 32)))
        from corrflow.losses import colour_nll

        expected = colour_nll(net.upsample(p0, (32, 32)), labels[:, 0])
    torch.testing.assert_close(out["loss_cycle_1"], expected)


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
