import torch

from corrflow.models.bottleneck import ColourBottleneck


def test_dropout_drops_the_same_channels_in_every_frame_and_rescales():
    torch.manual_seed(0)
    bn = ColourBottleneck(p_dropout=1.0, p_jitter=0.0, dropout_per="clip").train()
    x = torch.rand(64, 3, 3, 8, 8) * 0.5 + 0.25  # no zeros in the input
    y = bn(x)
    seen = set()
    for b in range(x.shape[0]):
        dropped = (y[b] == 0).all(dim=(-1, -2))  # (T, 3)
        assert (dropped == dropped[0]).all(), "channels must be dropped alike in every frame"
        n = int(dropped[0].sum())
        assert n in (1, 2)
        seen.add(n)
        kept = ~dropped[0]
        torch.testing.assert_close(y[b][:, kept], x[b][:, kept] * 3 / (3 - n))
    assert seen == {1, 2}


def test_batch_mode_drops_alike_across_the_batch_as_the_code_does():
    torch.manual_seed(1)
    bn = ColourBottleneck(p_dropout=1.0, p_jitter=0.0, dropout_per="batch").train()
    y = bn(torch.rand(8, 3, 3, 4, 4) + 0.1)
    dropped = (y == 0).all(dim=(-1, -2))  # (B, T, 3)
    assert (dropped == dropped[0, 0]).all()


def test_dropout_rate_is_about_p():
    torch.manual_seed(2)
    bn = ColourBottleneck(p_dropout=0.7, p_jitter=0.0, dropout_per="clip").train()
    y = bn(torch.rand(2000, 1, 3, 1, 1) + 0.1)
    rate = (y == 0).any(dim=2).float().mean().item()
    assert abs(rate - 0.7) < 0.05


def test_eval_mode_and_zero_probabilities_are_identity():
    x = torch.rand(2, 3, 3, 8, 8)
    assert torch.equal(ColourBottleneck().eval()(x), x)
    assert torch.equal(ColourBottleneck(p_dropout=0.0, p_jitter=0.0).train()(x), x)


def test_jitter_changes_frames_independently_when_per_frame():
    torch.manual_seed(3)
    bn = ColourBottleneck(p_dropout=0.0, p_jitter=1.0, jitter_per_frame=True, brightness=0.5).train()
    x = torch.rand(1, 1, 3, 8, 8).expand(1, 3, 3, 8, 8).contiguous()  # three identical frames
    y = bn(x)
    assert not torch.allclose(y[0, 0], y[0, 1])
    shared = ColourBottleneck(p_dropout=0.0, p_jitter=1.0, jitter_per_frame=False, brightness=0.5).train()(x)
    torch.testing.assert_close(shared[0, 0], shared[0, 1])
