import pytest
import torch
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock

from corrflow.models.encoder import ResNetEncoder, corrflow_encoder, crw_encoder


def test_corrflow_encoder_is_64d_at_stride_4():
    enc = corrflow_encoder().eval()
    out = enc(torch.rand(2, 3, 64, 96))
    assert out.shape == (2, 64, 16, 24)
    assert enc.stride == 4 and enc.out_dim == 64
    assert isinstance(enc.maxpool, torch.nn.Identity)
    assert enc.layer4[0].conv1.out_channels == 256


def test_crw_encoder_is_256d_at_stride_8():
    enc = crw_encoder().eval()
    out = enc(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 256, 8, 12)
    assert enc.stride == 8 and enc.out_dim == 256
    assert not hasattr(enc, "layer4")


def test_crw_encoder_takes_torchvision_resnet18_weights():
    tv = resnet18(weights=None).state_dict()
    enc = crw_encoder()
    shared = {k: v for k, v in tv.items() if not k.startswith(("layer4", "fc"))}
    missing, unexpected = enc.load_state_dict(shared, strict=False)
    assert unexpected == []
    assert [k for k in missing if not k.startswith("head")] == []
    torch.testing.assert_close(enc.conv1.weight, tv["conv1.weight"])


def test_config_rebuilds_the_same_architecture():
    enc = ResNetEncoder(depth=34, maxpool=True, layer_strides=(2, 2, 1), out_channels=32)
    again = ResNetEncoder(**enc.config)
    assert again.stride == enc.stride == 16
    assert [k for k in again.state_dict()] == [k for k in enc.state_dict()]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="depth"):
        ResNetEncoder(depth=50)
    with pytest.raises(ValueError, match="input_norm"):
        ResNetEncoder(input_norm="bgr")


def test_reflect_padding_mode() -> None:
    """CRW's own encoder pads by reflection: every padded convolution is set, the config records
    it (so checkpoints rebuild it), and the same weights give other features at the border."""
    from corrflow.models.encoder import crw_encoder

    torch.manual_seed(0)
    zeros = crw_encoder().eval()
    reflect = crw_encoder(padding_mode="reflect").eval()
    reflect.load_state_dict(zeros.state_dict())
    assert reflect.config["padding_mode"] == "reflect"
    assert all(m.padding_mode == "reflect" for m in reflect.modules() if isinstance(m, torch.nn.Conv2d) and sum(m.padding))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = zeros(x), reflect(x)
    assert a.shape == b.shape == (1, 256, 8, 8)
    assert not torch.allclose(a[..., 0, :], b[..., 0, :])
    with pytest.raises(ValueError, match="padding_mode"):
        crw_encoder(padding_mode="mirror")


def _convs_and_norms(module: torch.nn.Module):
    convs = [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return convs, norms


@pytest.mark.parametrize("seed", [0, 7])
def test_torchvision_shaped_layers_draw_torchvision_resnet18_weights(seed: int) -> None:
    """Seeded alike, the layers that torchvision's ResNet-18 also has (conv1 ... layer3, whatever
    their strides) hold exactly the weights ``resnet18(weights=None)`` draws: the literature's
    untrained baseline. The CRW encoder by default; the CorrFlow one with ``init='torchvision'``."""
    torch.manual_seed(seed)
    tv = resnet18(weights=None).state_dict()
    torch.manual_seed(seed)
    crw = crw_encoder().state_dict()
    torch.manual_seed(seed)
    corrflow = corrflow_encoder(init="torchvision").state_dict()
    shared = [k for k in tv if not k.startswith(("layer4", "fc"))]
    assert set(shared) == set(crw)
    for k in shared:
        torch.testing.assert_close(crw[k], tv[k], rtol=0, atol=0, msg=f"crw {k}")
        torch.testing.assert_close(corrflow[k], tv[k], rtol=0, atol=0, msg=f"corrflow {k}")


@pytest.mark.parametrize(
    "build",
    [
        lambda: corrflow_encoder(init="torchvision"),
        crw_encoder,
        lambda: ResNetEncoder(depth=34, layer4_channels=512, init="torchvision"),
    ],
)
def test_every_layer_is_initialised_as_torchvision_does(build) -> None:
    """Every conv (CorrFlow's 256-channel layer4 and 3x3 head included, which torchvision lacks):
    Kaiming normal, fan-out, ReLU gain, i.e. mean 0 and std sqrt(2 / fan_out); every BatchNorm
    weight 1, bias 0. (PyTorch's default conv init has std 1 / sqrt(3 fan_in): 2.45x smaller
    for a 3x3 64 -> 64 conv.)"""
    torch.manual_seed(0)
    convs, norms = _convs_and_norms(build())
    assert len(convs) >= 15 and len(norms) >= 15
    for name, conv in convs:
        w = conv.weight.detach().double()
        fan_out = w.shape[0] * w.shape[2] * w.shape[3]
        expected = (2.0 / fan_out) ** 0.5
        assert abs(w.std().item() / expected - 1) < 0.05, (name, w.std().item(), expected)
        assert abs(w.mean().item()) < 0.05 * expected, name
    for name, bn in norms:
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0), name
        assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1), name


@pytest.mark.parametrize("build", [corrflow_encoder, ResNetEncoder, lambda: crw_encoder(init="pytorch")])
def test_every_layer_is_initialised_as_the_released_corrflow_code(build) -> None:
    """The CorrFlow encoder's default is the released code's, which never re-initialises: every
    conv (the 3x3 head included) has PyTorch's ``kaiming_uniform_(a=sqrt(5))``, a uniform law in
    +-1/sqrt(fan_in), so mean 0, std 1/sqrt(3 fan_in), no weight beyond the bound; the head's bias
    uniform in +-1/sqrt(fan_in); every BatchNorm 1/0 with fresh running statistics."""
    torch.manual_seed(0)
    enc = build()
    assert enc.config["init"] == "pytorch"
    convs, norms = _convs_and_norms(enc)
    assert len(convs) >= 15 and len(norms) >= 15
    for name, conv in convs:
        w = conv.weight.detach().double()
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        expected = (1.0 / (3 * fan_in)) ** 0.5
        assert abs(w.std().item() / expected - 1) < 0.05, (name, w.std().item(), expected)
        assert w.abs().max().item() <= fan_in**-0.5 + 1e-9, name
        assert abs(w.mean().item()) < 0.05 * expected, name
        if conv.bias is not None:
            assert conv.bias.abs().max().item() <= fan_in**-0.5 + 1e-9, name
    for name, bn in norms:
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0), name
        assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1), name


def test_the_two_inits_differ_by_the_documented_factors() -> None:
    """torchvision's rule starts the 3x3 64 -> 64 convs sqrt(2/576) / sqrt(1/576) ~ 2.45x larger
    and the 256 -> 64 head sqrt(2/576) / sqrt(1/6912) ~ 4.9x larger than PyTorch's default."""
    torch.manual_seed(0)
    pt, tv = corrflow_encoder(), corrflow_encoder(init="torchvision")
    ratio = tv.layer1[0].conv1.weight.std() / pt.layer1[0].conv1.weight.std()
    assert 2.3 < ratio < 2.6
    ratio = tv.head.weight.std() / pt.head.weight.std()
    assert 4.6 < ratio < 5.2
    with pytest.raises(ValueError, match="init"):
        ResNetEncoder(init="kaiming")


def test_zero_init_residual_as_torchvision() -> None:
    """Off by default (torchvision's default); on, the last BN of every residual branch starts at
    zero, CorrFlow's own layer4 included, and the torchvision-shaped part matches
    ``resnet18(zero_init_residual=True)``."""
    torch.manual_seed(0)
    plain = corrflow_encoder()
    assert all(torch.all(b.bn2.weight == 1) for b in plain.modules() if isinstance(b, BasicBlock))
    torch.manual_seed(0)
    enc = ResNetEncoder(zero_init_residual=True, init="torchvision")
    assert enc.config["zero_init_residual"] is True
    blocks = [b for b in enc.modules() if isinstance(b, BasicBlock)]
    assert len(blocks) == 8
    for b in blocks:
        assert torch.all(b.bn2.weight == 0) and torch.all(b.bn1.weight == 1)
    torch.manual_seed(0)
    tv = resnet18(weights=None, zero_init_residual=True).state_dict()
    for k, v in enc.state_dict().items():
        if k.startswith(("conv1", "bn1", "layer1", "layer2", "layer3")):
            torch.testing.assert_close(v, tv[k], rtol=0, atol=0, msg=k)
