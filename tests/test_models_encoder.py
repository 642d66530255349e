import pytest
import torch
from torchvision.models import resnet18

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
